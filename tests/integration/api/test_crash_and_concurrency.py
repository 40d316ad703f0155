"""Concurrency and crash safety against a real ``sandman serve`` process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from tests.integration.conftest import TEST_NETWORK, TOKEN, remove_deployment_containers

HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    data_dir: Path
    env: dict[str, str]
    url: str
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.data_dir / "serve.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sandman.cli", "serve"], env=self.env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.process.poll() is None, (self.data_dir / "serve.log").read_text()
            time.sleep(0.2)
        raise AssertionError("sandman serve did not answer")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def get(self, path: str) -> Any:
        return httpx.get(f"{self.url}/api/v1{path}", headers=HEADERS, timeout=30).json()

    def create(self, user_id: str, **body: Any) -> httpx.Response:
        return httpx.post(
            f"{self.url}/api/v1/sessions",
            json={"user_id": user_id, **body},
            headers=HEADERS,
            timeout=180,
        )

    def deployment(self) -> str:
        import sqlite3

        with sqlite3.connect(self.data_dir / "sandman.db") as db:
            (value,) = db.execute("SELECT value FROM meta WHERE key='deployment_id'").fetchone()
            return str(value)


@pytest.fixture
def server(docker_client: Any, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(**settings: str) -> Server:
        port = _free_port()
        env = {
            **os.environ,
            "SANDMAN_DATA_DIR": str(tmp_path / "data"),
            "SANDMAN_ADMIN_TOKEN": TOKEN,
            "SANDMAN_PORT": str(port),
            "SANDMAN_CONTAINER_PREFIX": f"smc-{uuid.uuid4().hex[:6]}",
            "SANDMAN_NETWORK_NAME": TEST_NETWORK,
            "SANDMAN_CPUS": "0.5",
            "SANDMAN_MEMORY": "256m",
            "SANDMAN_STOP_GRACE_PERIOD": "1",
            "SANDMAN_LOG_LEVEL": "WARNING",
            "SANDMAN_SSH_MODE": "both",
            "SANDMAN_SSH_LISTEN": f"127.0.0.1:{_free_port()}",
            **{f"SANDMAN_{k.upper()}": v for k, v in settings.items()},
        }
        (tmp_path / "data").mkdir(exist_ok=True)
        found = Server(tmp_path / "data", env, f"http://127.0.0.1:{port}")
        made.append(found)
        return found

    yield make
    for found in made:
        found.stop()
    if made:
        deployment = made[0].deployment()
        remove_deployment_containers(deployment, show_logs=False)


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
