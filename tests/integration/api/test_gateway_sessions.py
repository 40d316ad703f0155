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
from tests.integration.support import HEADERS, Server, start_gateway, write_key


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
