"""Concurrency and crash safety against a real ``sandman serve`` process."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import httpx
from tests.integration.support import HEADERS, Server


def _managed(deployment: str) -> list[Any]:
    return docker.from_env(version="auto").containers.list(
        all=True, filters={"label": f"sandman.deployment={deployment}"}
    )


def test_thirty_concurrent_creates_get_exactly_seven_slices(
    server: Callable[..., Server],
) -> None:
    sandman = server(gpu_topology="a100-40gb-7x1g")
    sandman.start()
    with ThreadPoolExecutor(max_workers=30) as pool:
        responses = list(pool.map(lambda i: sandman.create(f"burst{i}"), range(30)))
    created = [r.json() for r in responses if r.status_code == 201]
    refused = [r for r in responses if r.status_code != 201]
    assert len(created) == 7, [r.text for r in refused][:3]
    assert all(r.status_code == 503 for r in refused), {r.status_code for r in refused}
    assert all("1g.5gb" in r.json()["error"] for r in refused)
    assert len({s["gpu_uuid"] for s in created}) == 7
    assert len({s["direct_ssh_port"] for s in created}) == 7
    containers = _managed(sandman.deployment())
    assert sorted(c.labels["sandman.session_id"] for c in containers) == sorted(
        s["session_id"] for s in created
    )
    assert all(c.status == "running" for c in containers)
    ended = httpx.delete(f"{sandman.url}/sessions", headers=HEADERS, timeout=120).json()
    assert len(ended["ended"]) == 7
    assert _managed(sandman.deployment()) == []
    available = sandman.get("/gpus/available")
    assert available["count"] == 7


def test_kill_9_during_a_burst_leaks_nothing_after_restart(
    server: Callable[..., Server],
) -> None:
    sandman = server(gpu_topology="a100-40gb-7x1g", reconcile_interval="2s")
    sandman.start()
    pool = ThreadPoolExecutor(max_workers=10)
    futures = [pool.submit(sandman.create, f"crash{i}") for i in range(10)]
    time.sleep(1.5)  # some sessions running, some half-created
    sandman.kill()
    for future in futures:
        with contextlib.suppress(httpx.HTTPError):
            future.result(timeout=30)
    pool.shutdown()

    sandman.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sessions = sandman.get("/sessions?status=all")
        if not any(s["status"] in ("starting", "stopping") for s in sessions):
            break
        time.sleep(0.5)
    active = {s["session_id"] for s in sandman.get("/sessions")}
    assert not any(s["status"] in ("starting", "stopping") for s in sessions), sessions
    assert all(s["status"] in ("running", "failed") for s in sessions)
    # every running session has its container, and no container lacks a session
    containers = _managed(sandman.deployment())
    assert {c.labels["sandman.session_id"] for c in containers} == active
    assert all(c.status == "running" for c in containers)
    # GPU slices: used ones are exactly the active sessions'; the rest are free again
    gpus = sandman.get("/gpus")["gpus"][0]["mig_instances"]
    assert sum(1 for i in gpus if i["allocated"]) == len(active)
    assert {i["session_id"] for i in gpus if i["allocated"]} == active


def test_admin_cli_against_a_live_server(server: Callable[..., Server], tmp_path: Path) -> None:
    sandman = server()
    sandman.start()
    env = {**sandman.env, "SANDMAN_URL": sandman.url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sandman.cli", *args], env=env, capture_output=True,
            text=True, timeout=120, cwd=tmp_path, check=False,
        )  # fmt: skip

    key_file = tmp_path / "kim.key"
    created = cli("session", "create", "kim", "--ttl", "30", "--save-key", str(key_file))
    assert created.returncode == 0, created.stderr
    assert "kim" in created.stdout and key_file.stat().st_mode & 0o777 == 0o600
    (session,) = sandman.get("/sessions")
    listed = cli("session", "list")
    assert session["session_id"][:8] in listed.stdout
    assert cli("session", "extend", session["session_id"], "--ttl", "90").returncode == 0
    assert sandman.get(f"/sessions/{session['session_id']}")["ttl_minutes"] == 90
    assert "1g.5gb" in cli("gpus").stdout
    refused = cli("session", "create", "kim")
    assert refused.returncode == 1 and "409" in refused.stderr
    assert cli("session", "delete", session["session_id"]).returncode == 0
    assert sandman.get("/sessions") == []
    no_token = subprocess.run(
        [sys.executable, "-m", "sandman.cli", "session", "list"],
        env={**env, "SANDMAN_ADMIN_TOKEN": "wrong"}, capture_output=True, text=True,
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert no_token.returncode == 1 and "401" in no_token.stderr
