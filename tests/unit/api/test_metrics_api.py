"""/metrics and the metrics history through the API, over a fake runtime."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import HEADERS, fake_core
from tests.unit.api.test_accounts_api import make_user

from sandman.api.app import create_app
from sandman.core import Sandman
from sandman.observe.history import Point, minute_of
from sandman.store.models import utcnow

LOOPBACK = ("127.0.0.1", 40000)
ELSEWHERE = ("10.1.2.3", 40000)


def _client(core: Sandman, client: tuple[str, int]) -> TestClient:
    return TestClient(create_app(core, run_background=False), client=client)


@pytest.fixture
def core(tmp_path: Path) -> Iterator[Sandman]:
    made = fake_core(tmp_path, FakeRuntime(), default_mig_profile=None)
    yield made
    made.stop()


def _series(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_loopback_scrapes_without_a_token(core: Sandman) -> None:
    with _client(core, LOOPBACK) as api:
        created = api.post("/api/v1/sessions", json={"user_id": "alice"}, headers=HEADERS)
        assert created.status_code == 201, created.text
        core.collector.collect()
        answer = api.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    info = _series(answer.text, "sandman_session_info")
    assert [dict(k)["user"] for k in info] == ["alice"]
    assert _series(answer.text, "DCGM_FI_PROF_GR_ENGINE_ACTIVE")  # the simulated GPUs


def test_a_scrape_through_a_local_proxy_is_not_local(core: Sandman) -> None:
    with _client(core, LOOPBACK) as api:
        proxied = api.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxied.status_code == 403 and "SANDMAN_METRICS_TOKEN" in proxied.json()["error"]


def test_other_clients_need_the_metrics_token(tmp_path: Path) -> None:
    without = fake_core(tmp_path / "a", FakeRuntime())
    with _client(without, ELSEWHERE) as api:
        refused = api.get("/metrics", headers={"Authorization": "Bearer anything"})
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    without.stop()
    with_token = fake_core(tmp_path / "b", FakeRuntime(), metrics_token="scrape-me")
    with _client(with_token, ELSEWHERE) as api:
        assert api.get("/metrics").status_code == 401
        assert api.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        # The API's own tokens are not the metrics token.
        assert api.get("/metrics", headers=HEADERS).status_code == 401
        good = api.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert good.status_code == 200, good.text
    with_token.stop()


def test_http_requests_are_counted_by_route_template(core: Sandman) -> None:
    with _client(core, LOOPBACK) as api:
        for _ in range(3):
            assert api.get("/api/v1/sessions/abc-123", headers=HEADERS).status_code == 404
        assert api.get("/sessions/def-456", headers=HEADERS).status_code == 404  # seed path
        assert api.get("/no/such/path").status_code == 404
        text = api.get("/metrics").text
    counts = {dict(k)["route"]: v for k, v in _series(text, "sandman_http_requests_total").items()}
    assert counts["/api/v1/sessions/{session_id}"] == 3
    assert counts["/sessions/{session_id}"] == 1
    assert counts["unmatched"] == 1
    assert not any("abc-123" in route for route in counts)
    timed = _series(text, "sandman_http_request_seconds_count")
    assert timed[(("route", "/api/v1/sessions/{session_id}"),)] == 3


def test_creates_and_ends_are_counted(core: Sandman) -> None:
    with _client(core, LOOPBACK) as api:
        body = api.post("/api/v1/sessions", json={"user_id": "alice"}, headers=HEADERS).json()
        api.delete(f"/api/v1/sessions/{body['session_id']}", headers=HEADERS)
        impossible = {"user_id": "bob", "mig_profile": "7g.40gb"}
        assert api.post("/api/v1/sessions", json=impossible, headers=HEADERS).status_code == 503
        text = api.get("/metrics").text
    assert _series(text, "sandman_sessions_ended_total")[(("status", "deleted"),)] == 1
    failures = _series(text, "sandman_session_create_failures_total")
    assert failures[(("code", "capacity_exhausted"),)] == 1
    assert _series(text, "sandman_session_create_seconds_count")[()] == 2


def test_reconciler_repairs_are_counted(core: Sandman) -> None:
    runtime: Any = core.runtime
    with _client(core, LOOPBACK) as api:
        api.post("/api/v1/sessions", json={"user_id": "alice"}, headers=HEADERS)
        core.reconciler.grace = timedelta(0)
        runtime.vanish(runtime.running()[0].id)
        core.reconciler.run_once()
        text = api.get("/metrics").text
    repairs = _series(text, "sandman_reconciler_repairs_total")
    assert repairs[(("kind", "ended_sessions"),)] == 1
    assert _series(text, "sandman_sessions_ended_total")[(("status", "lost"),)] == 1


def test_a_sessions_history_is_read_as_the_session_is(core: Sandman) -> None:
    with _client(core, LOOPBACK) as api:
        alice, bob = make_user(api, "alice"), make_user(api, "bob")
        session = api.post("/api/v1/sessions", json={}, headers=alice).json()["session_id"]
        minute = minute_of(utcnow()) - timedelta(minutes=5)
        core.metrics.history.write(
            [Point("session", session, minute, 4, gpu_active=0.5, cpu_percent=50.0)]
        )
        mine = api.get(f"/api/v1/sessions/{session}/metrics", headers=alice)
        assert mine.status_code == 200, mine.text
        body = mine.json()
        assert body["kind"] == "session" and body["interval_seconds"] == 60
        assert [(p["gpu_active"], p["cpu_percent"], p["samples"]) for p in body["points"]] == [
            (0.5, 50.0, 4)
        ]
        assert api.get(f"/api/v1/sessions/{session}/metrics", headers=HEADERS).status_code == 200
        other = api.get(f"/api/v1/sessions/{session}/metrics", headers=bob)
        assert other.status_code == 404  # as if it did not exist
        assert api.get("/api/v1/sessions/nope/metrics", headers=alice).status_code == 404
        later = {"since": (minute + timedelta(minutes=1)).isoformat()}
        assert (
            api.get(f"/api/v1/sessions/{session}/metrics", params=later, headers=alice).json()[
                "points"
            ]
            == []
        )
        backwards = {"since": "2026-05-02T00:00:00Z", "until": "2026-05-01T00:00:00Z"}
        refused = api.get(f"/api/v1/sessions/{session}/metrics", params=backwards, headers=alice)
        assert refused.status_code == 400 and "before" in refused.json()["error"]


def test_a_gpus_history_needs_gpu_read_and_a_gpu(core: Sandman) -> None:
    gpu = core.inventory.devices()[0].uuid
    with _client(core, LOOPBACK) as api:
        alice = make_user(api, "alice")
        answer = api.get(f"/api/v1/gpus/{gpu}/metrics", headers=alice)
        assert answer.status_code == 200, answer.text
        assert answer.json()["kind"] == "gpu" and answer.json()["key"] == gpu
        missing = api.get("/api/v1/gpus/GPU-nope/metrics", headers=HEADERS)
        assert missing.status_code == 404
        assert api.get(f"/api/v1/gpus/{gpu}/metrics").status_code == 401


def test_metrics_is_not_in_the_api_document(core: Sandman) -> None:
    with _client(core, LOOPBACK) as api:
        paths = api.get("/openapi.json").json()["paths"]
    assert "/metrics" not in paths
    assert "/api/v1/sessions/{session_id}/metrics" in paths
    assert "/api/v1/gpus/{gpu_uuid}/metrics" in paths
