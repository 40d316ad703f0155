"""The wait queue and preemption on a real server with real containers: a queued
request starts once a slice frees, a second request of a queued user is 409, and
a preempted session is warned, given its grace, and ends ``preempted`` while the
request it made room for starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import docker
import httpx
from tests.integration.support import HEADERS, TOKEN, Server


def _wait(sandman: Server, session_id: str, status: str, within: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        body: dict[str, Any] = sandman.get(f"/sessions/{session_id}")
        if body["status"] == status or time.monotonic() > deadline:
            assert body["status"] == status, body
            return body
        time.sleep(0.1)


def _containers(sandman: Server) -> dict[str, str]:
    found = docker.from_env(version="auto").containers.list(
        all=True, filters={"label": f"sandman.deployment={sandman.deployment()}"}
    )
    return {c.labels["sandman.session_id"]: c.status for c in found}


def _admin(sandman: Server, method: str, path: str, body: dict[str, Any]) -> None:
    response = httpx.request(
        method, f"{sandman.url}/api/v1{path}", json=body, headers=HEADERS, timeout=30
    )
    assert response.status_code < 300, response.text


def test_a_queued_request_starts_when_a_slice_frees(server: Callable[..., Server]) -> None:
    sandman = server(gpu_topology="a100-40gb-x1")
    sandman.start()
    held = sandman.create("qa", mig_profile="7g.40gb")
    assert held.status_code == 201, held.text
    queued = sandman.create("qb", mig_profile="3g.20gb", queue=True)
    assert queued.status_code == 202, queued.text
    waiting = queued.json()
    assert waiting["status"] == "queued" and waiting["queue_position"] == 1
    assert waiting["eta"] == held.json()["expires_at"]
    assert waiting["session_id"] not in _containers(sandman)  # it holds nothing
    second = sandman.create("qb", mig_profile="1g.5gb", queue=True)
    assert second.status_code == 409, second.text
    refused = sandman.create("qc", mig_profile="1g.5gb")
    assert refused.status_code == 503 and refused.json()["eta"] is not None
    assert "Retry-After" in refused.headers
    # The CLI asks to wait too, and lists the queue.
    cli = {**os.environ, "SANDMAN_URL": sandman.url, "SANDMAN_ADMIN_TOKEN": TOKEN}
    run = [sys.executable, "-m", "sandman.cli"]
    asked = subprocess.run(
        [*run, "session", "create", "qc", "--mig-profile", "1g.5gb", "--queue"],
        env=cli, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert asked.returncode == 0 and "queued at position 2" in asked.stdout, asked
    listed = subprocess.run(
        [*run, "queue", "--json"], env=cli, capture_output=True, text=True, timeout=60
    )
    assert [(e["user_id"], e["asks"]) for e in json.loads(listed.stdout)] == [
        ("qb", "3g.20gb"),
        ("qc", "1g.5gb"),
    ]

    freed = time.monotonic()
    httpx.delete(
        f"{sandman.url}/api/v1/sessions/{held.json()['session_id']}", headers=HEADERS, timeout=60
    )
    running = _wait(sandman, waiting["session_id"], "running")
    print(f"queued request running {time.monotonic() - freed:.2f}s after the slice freed")
    assert running["mig_profile"] == "3g.20gb"
    small = _wait(sandman, sandman.get("/sessions?user_id=qc")[0]["session_id"], "running")
    assert small["mig_profile"] == "1g.5gb"  # the 7g's room took both
    assert _containers(sandman) == {waiting["session_id"]: "running", small["id"]: "running"}
    assert sandman.get("/queue") == []


def test_preemption_warns_waits_and_ends_the_session_as_preempted(
    server: Callable[..., Server],
) -> None:
    sandman = server(gpu_topology="a100-40gb-x1", preempt_grace="4s", queue_interval="1s")
    sandman.start()
    for team in ("ml", "vision"):
        _admin(sandman, "POST", "/teams", {"name": team})
    _admin(sandman, "PUT", "/quotas/team/vision", {"guaranteed_slices": 7})
    victim = sandman.create("pa", mig_profile="7g.40gb", team="ml", priority="low")
    assert victim.status_code == 201, victim.text
    victim_id = victim.json()["session_id"]
    asked = sandman.create("pb", mig_profile="3g.20gb", team="vision", queue=True)
    assert asked.status_code == 202, asked.text
    requester = asked.json()["session_id"]

    warned = time.monotonic()
    deadline = warned + 30
    while sandman.get(f"/sessions/{victim_id}")["preempt_at"] is None:
        assert time.monotonic() < deadline, "the session was never marked for preemption"
        time.sleep(0.1)
    during = sandman.get(f"/sessions/{victim_id}")
    assert during["status"] == "running"  # its grace
    assert _containers(sandman)[victim_id] == "running"

    ended = _wait(sandman, victim_id, "preempted")
    assert ended["end_reason"] == (
        f"preempted: pb's normal-priority request {requester} of team vision needed its 7 slices"
    )
    started = _wait(sandman, requester, "running")
    assert started["mig_profile"] == "3g.20gb"
    assert _containers(sandman) == {requester: "running"}
    audit = httpx.get(f"{sandman.url}/api/v1/audit", headers=HEADERS, timeout=30).json()
    preemptions = [e for e in audit if e["action"].startswith("session.preempt")]
    assert {e["action"] for e in preemptions} == {"session.preempt", "session.preempted"}
    assert all(e["target"] == victim_id for e in preemptions)
    assert all(e["detail"]["for_session"] == requester for e in preemptions)
