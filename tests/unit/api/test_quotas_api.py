"""Quotas through the API: refusals that name the quota and the numbers, the
strictest of user, team and project winning, TTLs on create and on extend, and
who may read and set them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import HEADERS as ADMIN
from tests.unit.api.conftest import fake_core

from sandman.api.app import create_app


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    """One A100-40GB whose MIG instances are made on demand."""
    core = fake_core(tmp_path, FakeRuntime(), gpu_topology="a100-40gb-x1")
    with TestClient(create_app(core, run_background=False)) as client:
        yield client
    core.stop()


def user_token(api: TestClient, user_id: str, team: str | None = None) -> dict[str, str]:
    body: dict[str, Any] = {"user_id": user_id}
    if team:
        api.post("/api/v1/teams", json={"name": team}, headers=ADMIN)
        body["default_team"] = team
    assert api.post("/api/v1/users", json=body, headers=ADMIN).status_code == 201
    token = api.post("/api/v1/tokens", json={"name": "t", "user_id": user_id}, headers=ADMIN)
    return {"Authorization": f"Bearer {token.json()['token']}"}


def put(api: TestClient, path: str, body: dict[str, Any]) -> None:
    response = api.put(f"/api/v1/quotas/{path}", json=body, headers=ADMIN)
    assert response.status_code == 200, response.text


def test_a_team_quota_counts_every_members_slices(api: TestClient) -> None:
    ann = user_token(api, "ann", team="vision")
    ben = user_token(api, "ben", team="vision")
    api.put("/api/v1/teams/vision/members/ben", json={"role": "member"}, headers=ADMIN)
    put(api, "team/vision", {"max_slices": 4})
    first = api.post("/api/v1/sessions", json={"mig_profile": "3g.20gb"}, headers=ann)
    assert first.status_code == 201, first.text
    assert first.json()["team"] == "vision"
    refused = api.post(
        "/api/v1/sessions", json={"mig_profile": "2g.10gb", "team": "vision"}, headers=ben
    )
    assert refused.status_code == 403 and refused.json()["code"] == "quota_exceeded"
    assert refused.json()["error"] == (
        "team vision: uses 3 of 4 slices; this request needs 2 (max_slices)"
    )
    fits = api.post("/api/v1/sessions", json={"mig_profile": "1g.5gb"}, headers=ben)
    assert fits.status_code == 201, fits.text


def test_defaults_apply_and_an_own_quota_overrides_them(api: TestClient) -> None:
    put(api, "defaults/user", {"max_ttl_minutes": 30, "allowed_priorities": ["low", "normal"]})
    cid = user_token(api, "cid")
    long = api.post("/api/v1/sessions", json={"ttl_minutes": 60}, headers=cid)
    assert long.status_code == 403
    assert "at most 30 minutes, not 60 (max_ttl_minutes)" in long.json()["error"]
    high = api.post("/api/v1/sessions", json={"priority": "high"}, headers=cid)
    assert high.status_code == 403 and "allowed_priorities" in high.json()["error"]
    put(api, "user/cid", {"max_ttl_minutes": 90})
    made = api.post("/api/v1/sessions", json={"ttl_minutes": 60}, headers=cid)
    assert made.status_code == 201 and made.json()["priority"] == "normal"
    sid = made.json()["id"]
    extend = api.patch(f"/api/v1/sessions/{sid}", json={"ttl_minutes": 120}, headers=cid)
    assert extend.status_code == 403 and extend.json()["code"] == "quota_exceeded"
    assert (
        api.patch(f"/api/v1/sessions/{sid}", json={"ttl_minutes": 80}, headers=cid).status_code
        == 200
    )


def test_users_read_what_applies_to_them_and_set_nothing(api: TestClient) -> None:
    dee = user_token(api, "dee", team="nlp")
    put(api, "team/nlp", {"max_sessions": 2, "guaranteed_slices": 7})
    put(api, "user/someone", {"max_sessions": 1})
    api.post("/api/v1/sessions", json={"mig_profile": "2g.10gb"}, headers=dee)
    mine = api.get("/api/v1/quotas", params={"team": "nlp"}, headers=dee)
    assert mine.status_code == 200
    body = mine.json()
    assert {(q["kind"], q["name"]) for q in body["quotas"]} == {("team", "nlp")}
    team = next(a for a in body["applied"] if a["kind"] == "team")
    assert team["limits"] == {"max_sessions": 2, "guaranteed_slices": 7}
    assert team["used"] == {
        "sessions": 1,
        "slices": 2,
        "gpu_hours_month": team["used"]["gpu_hours_month"],
    }
    assert api.put("/api/v1/quotas/user/dee", json={}, headers=dee).status_code == 403
    assert api.get("/api/v1/quotas", params={"user_id": "someone"}, headers=dee).status_code == 403
    everything = api.get("/api/v1/quotas", headers=ADMIN).json()["quotas"]
    assert {(q["kind"], q["name"]) for q in everything} == {("team", "nlp"), ("user", "someone")}
    assert api.delete("/api/v1/quotas/user/someone", headers=ADMIN).status_code == 200
    assert api.delete("/api/v1/quotas/user/someone", headers=ADMIN).status_code == 404


def test_me_shows_the_quotas_that_apply(api: TestClient) -> None:
    eve = user_token(api, "eve", team="ml")
    put(api, "team/ml", {"max_slices": 7})
    api.post("/api/v1/sessions", json={"mig_profile": "2g.10gb"}, headers=eve)
    quotas = api.get("/api/v1/me", headers=eve).json()["quotas"]
    team = next(q for q in quotas if q["kind"] == "team")
    assert team["name"] == "ml" and team["limits"] == {"max_slices": 7}
    assert team["used"]["slices"] == 2
