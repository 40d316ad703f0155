"""The sessions API over a fake runtime: status codes, headers and paging.

The fake lets a test hold every session starter at once, which a real engine
cannot do on demand; the real engine is driven by tests/integration.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import HEADERS, fake_core

from sandman.api.app import create_app


def _create(api: TestClient, user: str, **params: Any) -> Any:
    return api.post("/api/v1/sessions", params=params, json={"user_id": user}, headers=HEADERS)


def test_wait_false_answers_202_with_the_key_and_a_location(
    api: TestClient, runtime: FakeRuntime
) -> None:
    runtime.start_gate = threading.Event()  # the session stays starting until released
    response = _create(api, "alice", wait="false")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "starting"
    assert body["ssh_private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert response.headers["Location"] == f"/api/v1/sessions/{body['session_id']}"
    polled = api.get(response.headers["Location"], headers=HEADERS).json()
    assert polled["status"] == "starting" and "ssh_private_key" not in polled
    runtime.start_gate.set()
    deadline = time.monotonic() + 10
    while polled["status"] == "starting" and time.monotonic() < deadline:
        time.sleep(0.02)
        polled = api.get(response.headers["Location"], headers=HEADERS).json()
    assert polled["status"] == "running"
    # the seed's paths answer too, with the prefix-less Location
    second = api.post("/sessions?wait=false", json={"user_id": "bob"}, headers=HEADERS)
    assert second.status_code == 202
    assert second.headers["Location"] == f"/sessions/{second.json()['session_id']}"


def test_a_full_pool_answers_503_with_retry_after_and_reads_stay_fast(
    api: TestClient, runtime: FakeRuntime
) -> None:
    runtime.start_gate = threading.Event()
    with ThreadPoolExecutor(4) as pool:
        held = [pool.submit(_create, api, f"user{i}") for i in range(2)]  # both starters busy
        deadline = time.monotonic() + 5
        while runtime.calls["start"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runtime.calls["start"] == 2
        refused = _create(api, "carol")
        assert refused.status_code == 503
        assert refused.headers["Retry-After"].isdigit() and int(refused.headers["Retry-After"]) >= 1
        assert "busy" in refused.json()["error"]
        # reads are served while every starter is stuck
        started = time.monotonic()
        for _ in range(20):
            assert api.get("/healthz").status_code == 200
            assert api.get("/api/v1/sessions", headers=HEADERS).status_code == 200
        assert time.monotonic() - started < 5  # 40 reads; a stall would hit the 5 s start hang
        runtime.start_gate.set()
        assert [f.result().status_code for f in held] == [201, 201]
    listed = api.get("/api/v1/sessions", headers=HEADERS).json()
    assert sorted(s["user_id"] for s in listed) == ["user0", "user1"]  # carol wrote nothing


def test_paging_orders_by_creation_and_counts_in_a_header(api: TestClient) -> None:
    made = [_create(api, f"u{i}").json()["session_id"] for i in range(5)]
    everything = api.get("/api/v1/sessions", headers=HEADERS)
    assert [s["session_id"] for s in everything.json()] == made
    assert everything.headers["X-Total-Count"] == "5"
    page = api.get("/api/v1/sessions?limit=2&offset=1", headers=HEADERS)
    assert [s["session_id"] for s in page.json()] == made[1:3]
    assert page.headers["X-Total-Count"] == "5"
    tail = api.get("/sessions?limit=1000&offset=4", headers=HEADERS)
    assert [s["session_id"] for s in tail.json()] == made[4:]
    for bad in ("limit=0", "limit=1001", "offset=-1", "limit=x"):
        refused = api.get(f"/api/v1/sessions?{bad}", headers=HEADERS)
        assert refused.status_code == 400 and "error" in refused.json(), bad


def test_delete_all_ends_every_session_and_frees_everything(
    api: TestClient, runtime: FakeRuntime
) -> None:
    for i in range(12):
        assert _create(api, f"d{i}").status_code == 201
    response = api.delete("/api/v1/sessions", headers=HEADERS)
    assert response.status_code == 200
    assert len(response.json()["ended"]) == 12
    assert runtime.running() == []
    remaining = api.get("/api/v1/sessions?status=all", headers=HEADERS).json()
    assert {s["status"] for s in remaining} == {"deleted"}
    assert all(count == 1 for count in runtime.removed.values()) and len(runtime.removed) == 12


def test_a_zero_wait_refuses_only_when_every_starter_is_busy(
    tmp_path: Path, runtime: FakeRuntime
) -> None:
    core = fake_core(tmp_path, runtime, create_workers=1, create_wait=0, default_mig_profile=None)
    with TestClient(create_app(core, run_background=False)) as api:
        assert _create(api, "first").status_code == 201  # a free starter: no wait needed
        runtime.start_gate = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(_create, api, "second")
            deadline = time.monotonic() + 5
            while runtime.calls["start"] < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _create(api, "third").status_code == 503
            runtime.start_gate.set()
            assert held.result().status_code == 201
    core.stop()
