"""Idle reclaim through the API: a session's own idle timeout (checked against the
server's maximum, documented in OpenAPI), the ``idle`` status, and an extension
counting as activity."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import HEADERS, fake_core

from sandman.api.app import create_app


@pytest.fixture
def capped(tmp_path: Path, runtime: FakeRuntime) -> Iterator[TestClient]:
    """A server where sessions are reclaimed after at most two idle hours."""
    core = fake_core(
        tmp_path, runtime, default_mig_profile=None, idle_timeout="1h", idle_timeout_max="2h"
    )
    with TestClient(create_app(core, run_background=False)) as client:
        yield client
    core.stop()


def _create(api: TestClient, user: str, **body: Any) -> Any:
    return api.post("/api/v1/sessions", json={"user_id": user, **body}, headers=HEADERS)


def test_a_session_asks_for_its_own_idle_timeout(api: TestClient) -> None:
    created = _create(api, "alice", idle_timeout_minutes=30)
    assert created.status_code == 201, created.text
    assert created.json()["idle_timeout_minutes"] == 30
    read = api.get(f"/api/v1/sessions/{created.json()['session_id']}", headers=HEADERS)
    assert read.json()["idle_timeout_minutes"] == 30
    assert _create(api, "bob").json()["idle_timeout_minutes"] is None  # the server's
    assert _create(api, "carol", idle_timeout_minutes=0).json()["idle_timeout_minutes"] == 0
    assert _create(api, "cy", idle_timeout_minutes=45.0).json()["idle_timeout_minutes"] == 45


@pytest.mark.parametrize("value", [-1, 10081, "soon", "30", 1.5, True])
def test_impossible_idle_timeouts_are_400(api: TestClient, value: object) -> None:
    refused = _create(api, "dana", idle_timeout_minutes=value)
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == "invalid_request"


def test_the_servers_maximum(capped: TestClient) -> None:
    never = _create(capped, "erin", idle_timeout_minutes=0)
    assert never.status_code == 400
    assert "cannot be 0 (never) here" in never.json()["error"]
    longer = _create(capped, "erin", idle_timeout_minutes=121)
    assert longer.status_code == 400
    assert "at most 2 h without activity; ask for 1 to 120" in longer.json()["error"]
    assert _create(capped, "erin", idle_timeout_minutes=120).status_code == 201


def test_openapi_states_what_may_be_asked(api: TestClient, capped: TestClient) -> None:
    def field(client: TestClient) -> dict[str, Any]:
        schema = client.get("/openapi.json").json()["components"]["schemas"]
        prop = schema["CreateSessionBody"]["properties"]["idle_timeout_minutes"]
        return next(o for o in prop["anyOf"] if o.get("type") == "integer")

    assert (field(api)["minimum"], field(api)["maximum"]) == (0, 10080)
    assert (field(capped)["minimum"], field(capped)["maximum"]) == (1, 120)


def test_an_extension_counts_as_activity_and_idle_is_a_status(api: TestClient) -> None:
    session = _create(api, "finn").json()
    before = session["last_activity"]
    patched = api.patch(
        f"/api/v1/sessions/{session['session_id']}", json={"ttl_minutes": 90}, headers=HEADERS
    )
    assert patched.status_code == 200 and patched.json()["last_activity"] > before
    listed = api.get("/api/v1/sessions", params={"status": "idle"}, headers=HEADERS)
    assert listed.status_code == 200 and listed.json() == []
