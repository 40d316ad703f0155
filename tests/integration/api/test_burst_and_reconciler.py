"""A busy lab against a real ``sandman serve``: a burst of creates while the
reconciler runs every second. No session that was confirmed (201 or 202) may be
ended by Sandman itself."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import httpx
from tests.integration.support import HEADERS, Server, ssh, write_key

BURST = 40


def _create(server: Server, i: int) -> httpx.Response:
    # half the clients wait for sshd (201), half poll (202)
    wait = "true" if i % 2 else "false"
    return httpx.post(
        f"{server.url}/api/v1/sessions?wait={wait}",
        json={"user_id": f"burst{i}", "gpu_count": 0},
        headers=HEADERS,
        timeout=180,
    )


def test_a_burst_with_the_reconciler_every_second_loses_no_confirmed_session(
    server: Callable[..., Server], tmp_path: Path
) -> None:
    sandman = server(
        reconcile_interval="1s",
        reconcile_grace="0s",  # the ordering and re-inspection alone must hold
        create_workers="8",
        cpus="0.1",
        memory="64m",
        shm_size="16m",
    )
    sandman.start()
    with ThreadPoolExecutor(max_workers=BURST) as pool:
        responses = list(pool.map(lambda i: _create(sandman, i), range(BURST)))
    codes = sorted({r.status_code for r in responses})
    assert codes == [201, 202], [r.text for r in responses if r.status_code >= 300][:3]
    confirmed: dict[str, dict[str, Any]] = {r.json()["session_id"]: r.json() for r in responses}
    accepted = [r for r in responses if r.status_code == 202]
    assert all(r.headers["Location"].endswith(r.json()["session_id"]) for r in accepted)

    # Watch every session for a while: the reconciler runs each second meanwhile.
    deadline = time.monotonic() + 120
    settled_since: float | None = None
    while time.monotonic() < deadline:
        statuses = {s["session_id"]: s for s in sandman.get("/sessions?status=all")}
        ended = {
            sid: (statuses[sid]["status"], statuses[sid].get("end_reason"))
            for sid in confirmed
            if statuses[sid]["status"] not in ("starting", "running")
        }
        assert ended == {}, ended
        if all(statuses[sid]["status"] == "running" for sid in confirmed):
            settled_since = settled_since or time.monotonic()
            if time.monotonic() - settled_since > 5:  # five more reconciler rounds
                break
        time.sleep(0.25)
    else:
        raise AssertionError("sessions did not all reach running in 120 s")

    containers = docker.from_env(version="auto").containers.list(
        filters={"label": f"sandman.deployment={sandman.deployment()}"}
    )
    assert sorted(c.labels["sandman.session_id"] for c in containers) == sorted(confirmed)

    # A session confirmed with 202 is a real one: its key (shown only in the 202) logs in.
    session = accepted[0].json()
    current = sandman.get(f"/sessions/{session['session_id']}")
    key = write_key(tmp_path, session["ssh_private_key"])
    result = ssh(current, key, "echo $SANDMAN_SESSION_ID")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == session["session_id"]

    # Emptying the machine ends every session once, concurrently, as deleted.
    response = httpx.delete(f"{sandman.url}/api/v1/sessions", headers=HEADERS, timeout=300)
    assert response.status_code == 200
    assert sorted(response.json()["ended"]) == sorted(confirmed)
    after = {s["session_id"]: s["status"] for s in sandman.get("/sessions?status=all")}
    assert {after[sid] for sid in confirmed} == {"deleted"}
