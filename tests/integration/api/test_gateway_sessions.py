"""The gateway in front of real session containers: connections end with the session."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from tests.integration.conftest import Harness
from tests.integration.support import HEADERS, Server, ssh, start_gateway, write_key


def _ssh_popen(session: dict[str, object], key: Path, command: str) -> subprocess.Popen[str]:
    known = key.with_suffix(".known")
    known.write_text(f"[127.0.0.1]:{session['ssh_port']} {session['ssh_host_public_key']}\n")
    return subprocess.Popen(
        ["ssh", "-p", str(session["ssh_port"]), "-i", str(key), "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
         f"{session['user_id']}@127.0.0.1", command],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_started(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "started"


def test_deleting_a_session_cuts_its_connections(harness: Harness, tmp_path: Path) -> None:
    session = harness.create("nia").json()
    key = write_key(tmp_path, session["ssh_private_key"])
    process = _ssh_popen(session, key, "echo started; sleep 120")
    _wait_started(process)
    assert harness.core.gateway is not None and harness.core.gateway.connection_count("nia") == 1
    began = time.monotonic()
    harness.client.delete(f"/api/v1/sessions/{session['session_id']}", headers=harness.headers)
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - began < 10
    assert process.returncode != 0
    assert "closed" in stderr and session["session_id"] in stderr


def test_keys_given_with_a_session_end_with_it(harness: Harness, tmp_path: Path) -> None:
    session = harness.create("noor").json()
    key = write_key(tmp_path, session["ssh_private_key"])
    assert ssh(session, key, "true").returncode == 0
    harness.client.delete(f"/api/v1/sessions/{session['session_id']}", headers=harness.headers)
    refused = ssh(session, key, "true")
    assert refused.returncode == 255
    # refused at authentication: the ended session's key no longer counts
    assert "Permission denied (publickey)" in refused.stderr
    assert "no running session" not in refused.stderr


def test_a_standalone_gateway_follows_sessions_ended_by_the_api(
    server: Callable[..., Server], tmp_path: Path
) -> None:
    sandman = server(ssh_mode="gateway", run_gateway="false")
    sandman.start()
    gateway = start_gateway(sandman)
    try:
        created = sandman.create("omar")
        assert created.status_code == 201, created.text
        session = created.json()
        key = write_key(tmp_path, session["ssh_private_key"])
        process = _ssh_popen(session, key, "echo started; sleep 120")
        _wait_started(process)
        httpx.delete(
            f"{sandman.url}/api/v1/sessions/{session['session_id']}", headers=HEADERS, timeout=60
        ).raise_for_status()
        began = time.monotonic()
        process.communicate(timeout=30)
        assert time.monotonic() - began < 10, "the gateway's sweep should cut it within seconds"
        assert process.returncode != 0
    finally:
        os.killpg(gateway.pid, signal.SIGTERM)
        gateway.wait(timeout=30)


def test_password_login_when_enabled(make_harness, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    harness: Harness = make_harness(gateway_password_auth=True)
    put = harness.client.put(
        "/api/v1/users/pia/password", json={"password": "a long pass phrase"},
        headers=harness.headers,
    )  # fmt: skip
    assert put.status_code == 200 and put.json()["password_set"] is True
    assert "hash" not in put.text and "a long pass phrase" not in put.text
    assert (
        harness.client.put(
            "/api/v1/users/pia/password", json={"password": "short"}, headers=harness.headers
        ).status_code
        == 400
    )
    session = harness.create("pia").json()

    def login(password: str) -> subprocess.CompletedProcess[str]:
        askpass = tmp_path / "askpass"
        askpass.write_text(f"#!/bin/sh\necho '{password}'\n")
        askpass.chmod(0o700)
        known = tmp_path / "known"
        known.write_text(f"[127.0.0.1]:{session['ssh_port']} {session['ssh_host_public_key']}\n")
        return subprocess.run(
            ["ssh", "-p", str(session["ssh_port"]), "-o", f"UserKnownHostsFile={known}",
             "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password",
             "-o", "NumberOfPasswordPrompts=1", "pia@127.0.0.1", "id -un"],
            env={**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"},
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    assert login("a long pass phrase").stdout.strip() == "pia"
    wrong = login("not the pass phrase")
    assert wrong.returncode == 255 and "Permission denied" in wrong.stderr


def test_passwords_are_refused_when_disabled(harness: Harness, tmp_path: Path) -> None:
    harness.client.put(
        "/api/v1/users/rex/password", json={"password": "a long pass phrase"},
        headers=harness.headers,
    )  # fmt: skip
    session = harness.create("rex").json()
    known = tmp_path / "known"
    known.write_text(f"[127.0.0.1]:{session['ssh_port']} {session['ssh_host_public_key']}\n")
    result = subprocess.run(
        ["ssh", "-p", str(session["ssh_port"]), "-o", f"UserKnownHostsFile={known}",
         "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no", "rex@127.0.0.1", "true"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 255 and "(publickey)" in result.stderr
