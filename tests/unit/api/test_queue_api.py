"""The wait queue and preemption through the API, on one A100-40GB whose MIG
instances are made on demand (7 slices): 202 with a place and an ETA, 503 with an
ETA, one request per user, cancelling, starting as room frees, timing out, and
preemption with warning, grace and the ``preempted`` status."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import HEADERS as ADMIN
from tests.unit.api.conftest import fake_core
from tests.unit.api.test_quotas_api import put, user_token

from sandman.api.app import create_app
from sandman.core import Sandman


@pytest.fixture
def core(tmp_path: Path) -> Iterator[Sandman]:
    made = fake_core(tmp_path, FakeRuntime(), gpu_topology="a100-40gb-x1", preempt_grace=60)
    yield made
    made.stop()


@pytest.fixture
def api(core: Sandman) -> Iterator[TestClient]:
    with TestClient(create_app(core, run_background=False)) as client:
        yield client


def create(api: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = api.post("/api/v1/sessions", json=body, headers=headers)
    assert response.status_code in (201, 202), response.text
    out: dict[str, Any] = response.json()
    return out


def wait_for(api: TestClient, session_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        body: dict[str, Any] = api.get(f"/api/v1/sessions/{session_id}", headers=ADMIN).json()
        if body["status"] == status or time.monotonic() > deadline:
            assert body["status"] == status, body
            return body
        time.sleep(0.02)


def fill(api: TestClient, **body: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """All seven slices held by one 7g session of ``ann``."""
    ann = user_token(api, "ann", team=body.pop("team", None))
    return ann, create(api, ann, mig_profile="7g.40gb", ttl_minutes=60, **body)


def test_a_request_that_asks_to_wait_is_queued_with_its_place_and_eta(api: TestClient) -> None:
    _, held = fill(api)
    ben = user_token(api, "ben")
    response = api.post(
        "/api/v1/sessions", json={"mig_profile": "3g.20gb", "queue": True}, headers=ben
    )
    assert response.status_code == 202, response.text
    queued = response.json()
    assert queued["status"] == "queued" and queued["queue_position"] == 1
    assert queued["expires_at"] is None and queued["gpu_uuid"] is None
    assert response.headers["Location"].endswith(f"/api/v1/sessions/{queued['id']}")
    # The ETA: when the 7g session's TTL ends, the 3g starts.
    assert queued["eta"] == held["expires_at"]
    assert "no free 3g.20gb" in queued["reason"]
    # One request per user, queued or not.
    again = api.post("/api/v1/sessions", json={"mig_profile": "1g.5gb", "queue": True}, headers=ben)
    assert again.status_code == 409 and "queued request" in again.json()["error"]
    # It counts as active in the listings, and the queue shows it.
    listed = api.get("/api/v1/sessions", headers=ben).json()
    assert [s["id"] for s in listed] == [queued["id"]]
    assert listed[0]["queue_position"] == 1
    entries = api.get("/api/v1/queue", headers=ADMIN).json()
    assert [(e["session_id"], e["queue_position"], e["asks"]) for e in entries] == [
        (queued["id"], 1, "3g.20gb")
    ]
    assert api.get("/api/v1/queue", headers=user_token(api, "cid")).json() == []


def test_without_queue_a_full_machine_answers_503_with_an_eta(api: TestClient) -> None:
    _, held = fill(api)
    ben = user_token(api, "ben")
    refused = api.post("/api/v1/sessions", json={"mig_profile": "1g.5gb"}, headers=ben)
    assert refused.status_code == 503
    body = refused.json()
    assert body["code"] == "capacity_exhausted" and body["eta"] == held["expires_at"]
    assert "queue: true" in body["error"]
    assert 3000 < int(refused.headers["Retry-After"]) <= 3600


def test_a_queued_request_starts_as_soon_as_room_frees(api: TestClient, core: Sandman) -> None:
    ann, held = fill(api)
    ben = user_token(api, "ben")
    queued = create(api, ben, mig_profile="3g.20gb", queue=True)
    assert core.queue.dispatch().started == []  # nothing freed yet
    api.delete(f"/api/v1/sessions/{held['id']}", headers=ann)
    report = core.queue.dispatch()
    assert report.started == [queued["id"]]
    running = wait_for(api, queued["id"], "running")
    assert running["mig_profile"] == "3g.20gb" and running["expires_at"] is not None
    assert running["queue_position"] is None
    assert api.get("/api/v1/queue", headers=ADMIN).json() == []


def test_a_small_request_passes_a_large_one_that_does_not_fit(
    api: TestClient, core: Sandman
) -> None:
    ann = user_token(api, "ann")
    create(api, ann, mig_profile="4g.20gb")
    big = create(api, user_token(api, "ben"), mig_profile="7g.40gb", queue=True)
    small = create(api, user_token(api, "cid"), mig_profile="3g.20gb", queue=True)
    assert small["status"] == "running"  # it fitted at once: no queueing
    dan = create(api, user_token(api, "dan"), mig_profile="1g.5gb", queue=True)
    assert (big["status"], dan["status"]) == ("queued", "queued")
    entries = api.get("/api/v1/queue", headers=ADMIN).json()
    assert [e["session_id"] for e in entries] == [big["id"], dan["id"]]


def test_cancelling_a_queued_request(api: TestClient) -> None:
    fill(api)
    ben = user_token(api, "ben")
    queued = create(api, ben, mig_profile="1g.5gb", queue=True)
    ended = api.delete(f"/api/v1/sessions/{queued['id']}", headers=ben)
    assert ended.status_code == 200
    cancelled = ended.json()["session"]
    assert cancelled["status"] == "cancelled" and cancelled["expires_at"] is None
    assert cancelled["end_reason"] == "deleted through the API by ben"
    assert api.get("/api/v1/queue", headers=ADMIN).json() == []
    # The user may ask again.
    assert create(api, ben, mig_profile="1g.5gb", queue=True)["status"] == "queued"


def test_a_request_that_waited_too_long_is_cancelled(api: TestClient, core: Sandman) -> None:
    fill(api)
    queued = create(api, user_token(api, "ben"), mig_profile="1g.5gb", queue=True)
    later = datetime.now(UTC) + timedelta(hours=25)
    core.queue.clock = lambda: later
    assert core.queue.dispatch().cancelled == [queued["id"]]
    gone = api.get(f"/api/v1/sessions/{queued['id']}", headers=ADMIN).json()
    assert gone["status"] == "cancelled"
    assert gone["end_reason"].startswith("waited 24h (SANDMAN_QUEUE_TIMEOUT) without room")


def test_a_waitable_quota_queues_and_a_final_one_refuses(api: TestClient) -> None:
    ann = user_token(api, "ann", team="vision")
    ben = user_token(api, "ben", team="vision")
    put(api, "team/vision", {"max_slices": 3, "allowed_profiles": ["1g.5gb", "2g.10gb"]})
    create(api, ann, mig_profile="2g.10gb")
    waits = create(api, ben, mig_profile="2g.10gb", queue=True)
    assert waits["status"] == "queued"
    assert waits["reason"] == "team vision: uses 2 of 3 slices; this request needs 2 (max_slices)"
    api.delete(f"/api/v1/sessions/{waits['id']}", headers=ben)
    never = api.post(
        "/api/v1/sessions", json={"mig_profile": "3g.20gb", "queue": True}, headers=ben
    )
    assert never.status_code == 403 and "allowed_profiles" in never.json()["error"]
    assert api.get("/api/v1/sessions", headers=ben).json() == []


def test_a_request_no_gpu_here_can_serve_is_refused_not_queued(api: TestClient) -> None:
    ben = user_token(api, "ben")
    response = api.post("/api/v1/sessions", json={"gpu_count": 2, "queue": True}, headers=ben)
    assert response.status_code == 400, response.text


def preemption_setup(api: TestClient) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """``ann`` (team ml, no guarantee) holds the GPU at low priority; ``ben`` of team
    vision (a guarantee of 7) asks at normal priority and waits."""
    _, held = fill(api, team="ml", priority="low")
    ben = user_token(api, "ben", team="vision")
    put(api, "team/vision", {"guaranteed_slices": 7})
    queued = create(api, ben, mig_profile="3g.20gb", queue=True)
    return held, ben, queued


def test_preemption_warns_waits_out_the_grace_and_ends_as_preempted(
    api: TestClient, core: Sandman
) -> None:
    told: list[tuple[str, str | None, str, str]] = []
    core.queue.notify = lambda user, session, subject, text, *_: told.append(
        (user, session, subject, text)
    )
    held, _, queued = preemption_setup(api)
    report = core.queue.dispatch()
    assert report.warned == [held["id"]] and report.preempted == []
    victim = api.get(f"/api/v1/sessions/{held['id']}", headers=ADMIN).json()
    assert victim["status"] == "running" and victim["preempt_at"] is not None
    assert told[0][:3] == ("ann", held["id"], "Your session will be preempted")
    assert f"ben's normal-priority request {queued['id']} of team vision" in told[0][3]
    assert "needs its 7 slices" in told[0][3]
    # Within the grace nothing ends, and a second pass does not pick more victims.
    assert core.queue.dispatch().preempted == []
    later = datetime.now(UTC) + timedelta(seconds=61)
    core.queue.clock = lambda: later
    report = core.queue.dispatch()
    assert report.preempted == [held["id"]] and report.started == [queued["id"]]
    ended = api.get(f"/api/v1/sessions/{held['id']}", headers=ADMIN).json()
    assert ended["status"] == "preempted"
    assert ended["end_reason"] == (
        f"preempted: ben's normal-priority request {queued['id']} of team vision "
        "needed its 7 slices"
    )
    wait_for(api, queued["id"], "running")
    actions = [e["action"] for e in api.get("/api/v1/audit", headers=ADMIN).json()]
    assert "session.preempt" in actions and "session.preempted" in actions


def test_a_session_within_its_teams_guarantee_is_protected(api: TestClient, core: Sandman) -> None:
    _, held = fill(api, team="ml", priority="normal")
    put(api, "team/ml", {"guaranteed_slices": 7})
    ben = user_token(api, "ben", team="vision")
    put(api, "team/vision", {"guaranteed_slices": 7})
    create(api, ben, mig_profile="1g.5gb", queue=True)
    assert core.queue.dispatch().warned == []
    put(api, "team/ml", {"guaranteed_slices": 0})  # now beyond ml's guarantee
    assert core.queue.dispatch().warned == [held["id"]]


def test_a_session_of_higher_priority_is_never_preempted(api: TestClient, core: Sandman) -> None:
    fill(api, team="ml", priority="high")
    ben = user_token(api, "ben", team="vision")
    put(api, "team/vision", {"guaranteed_slices": 7})
    create(api, ben, mig_profile="1g.5gb", queue=True)
    assert core.queue.dispatch().warned == []


def test_beyond_its_guarantee_a_request_reaches_only_lower_priorities(
    api: TestClient, core: Sandman
) -> None:
    _, held = fill(api, team="ml", priority="normal")
    cid = user_token(api, "cid")  # no team: no guarantee
    waiting = create(api, cid, mig_profile="1g.5gb", queue=True, priority="normal")
    assert core.queue.dispatch().warned == []
    api.delete(f"/api/v1/sessions/{waiting['id']}", headers=cid)
    dan = user_token(api, "dan")
    create(api, dan, mig_profile="1g.5gb", queue=True, priority="high")
    assert core.queue.dispatch().warned == [held["id"]]


def test_a_preemption_is_lifted_when_its_requester_is_cancelled(
    api: TestClient, core: Sandman
) -> None:
    held, ben, queued = preemption_setup(api)
    assert core.queue.dispatch().warned == [held["id"]]
    api.delete(f"/api/v1/sessions/{queued['id']}", headers=ben)
    core.queue.dispatch()
    kept = api.get(f"/api/v1/sessions/{held['id']}", headers=ADMIN).json()
    assert kept["status"] == "running" and kept["preempt_at"] is None


def test_the_queue_metric_counts_waiting_requests(api: TestClient, core: Sandman) -> None:
    fill(api)
    create(api, user_token(api, "ben"), mig_profile="3g.20gb", queue=True)
    create(api, user_token(api, "cid"), mig_profile="3g.20gb", queue=True)
    core.queue.dispatch()
    text = core.metrics.registry.render(None, None).decode()
    assert 'sandman_queue_waiting{profile="3g.20gb"} 2.0' in text
