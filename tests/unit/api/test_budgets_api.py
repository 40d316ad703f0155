"""Budgets through the API over the fake runtime: set and read them with the spend
and forecast, block-new refusing with budget_exhausted, alerts to the leads once per
threshold, action end ending the sessions after the grace, and the metrics."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import HEADERS as ADMIN
from tests.unit.api.conftest import fake_core
from tests.unit.api.test_quotas_api import user_token

from sandman.api.app import create_app
from sandman.core import Sandman
from sandman.store.models import utcnow


@pytest.fixture
def core(tmp_path: Path) -> Iterator[Sandman]:
    made = fake_core(
        tmp_path,
        FakeRuntime(),
        gpu_topology="a100-40gb-x1",
        gpu_rates="A100-40GB=7.0",
        currency="EUR",
        preempt_grace=60,
    )
    yield made
    made.stop()


@pytest.fixture
def api(core: Sandman) -> Iterator[TestClient]:
    with TestClient(create_app(core, run_background=False)) as client:
        yield client


def later(core: Sandman, hours: float) -> None:
    moment = utcnow() + timedelta(hours=hours)
    core.budgets.clock = lambda: moment


def test_a_spent_block_new_budget_refuses_new_sessions(api: TestClient, core: Sandman) -> None:
    ann = user_token(api, "ann", team="ml")
    ben = user_token(api, "ben", team="ml")
    put = api.put(
        "/api/v1/budgets/team/ml", json={"amount": 10, "action": "block-new"}, headers=ADMIN
    )
    assert put.status_code == 200, put.text
    assert put.json()["spent"] == 0 and put.json()["currency"] == "EUR"
    made = api.post("/api/v1/sessions", json={"mig_profile": "7g.40gb"}, headers=ann)
    assert made.status_code == 201, made.text
    later(core, 2)  # a whole A100 at 7/h for 2 h: 14 of 10 spent
    listed = api.get("/api/v1/budgets", headers=ben).json()
    assert [(b["name"], b["action"]) for b in listed] == [("ml", "block-new")]
    assert listed[0]["spent"] == pytest.approx(14, abs=0.05)
    assert listed[0]["used_ratio"] == pytest.approx(1.4, abs=0.01)
    assert listed[0]["forecast"]["runs_out_at"] is not None
    refused = api.post("/api/v1/sessions", json={"mig_profile": "1g.5gb"}, headers=ben)
    assert refused.status_code == 403 and refused.json()["code"] == "budget_exhausted"
    assert "team ml's budget" in refused.json()["error"]
    queued = api.post(
        "/api/v1/sessions", json={"mig_profile": "1g.5gb", "queue": True}, headers=ben
    )
    assert queued.status_code == 403 and queued.json()["code"] == "budget_exhausted"
    # Another team is not affected, and a user outside ml sees no budget.
    cid = user_token(api, "cid", team="vision")
    assert api.get("/api/v1/budgets", headers=cid).json() == []


def test_thresholds_alert_the_leads_once_and_end_ends_the_sessions(
    api: TestClient, core: Sandman
) -> None:
    told: list[tuple[str, str, str]] = []
    core.budgets.tell_leads = lambda kind, name, subject, text: told.append((name, subject, text))
    warned: list[str] = []
    core.budgets.tell_user = lambda user, session, subject, text: warned.append(session)
    ann = user_token(api, "ann", team="ml")
    api.put("/api/v1/budgets/team/ml", json={"amount": 10, "action": "end"}, headers=ADMIN)
    made = api.post("/api/v1/sessions", json={"mig_profile": "7g.40gb"}, headers=ann).json()
    later(core, 1)  # 7 of 10: 50%
    core.budgets.sweep()
    assert [subject for _, subject, _ in told] == ["Budget 50%: ml"]
    core.budgets.sweep()
    assert len(told) == 1  # once per threshold and month
    later(core, 2)  # 14 of 10: 80% and 100% at once, one alert naming the highest
    core.budgets.sweep()
    assert told[-1][1] == "Budget 100%: ml" and "New sessions charged to it" in told[-1][2]
    assert warned == [made["id"]]
    status = api.get("/api/v1/budgets", headers=ADMIN).json()[0]
    assert status["sessions_end_at"] is not None
    assert api.get(f"/api/v1/sessions/{made['id']}", headers=ADMIN).json()["status"] == "running"
    later(core, 2 + 61 / 3600)
    core.budgets.sweep()
    ended = api.get(f"/api/v1/sessions/{made['id']}", headers=ADMIN).json()
    assert ended["status"] == "deleted"
    assert ended["end_reason"] == "the team ml's budget for " + status["month"] + (
        " is spent (action end)"
    )
    text = core.metrics.registry.render(None, None).decode()
    assert 'sandman_budget_used_ratio{kind="team",name="ml"}' in text


def test_budgets_need_an_existing_team_and_an_operator(api: TestClient) -> None:
    ann = user_token(api, "ann", team="ml")
    assert api.put("/api/v1/budgets/team/ml", json={"amount": 5}, headers=ann).status_code == 403
    missing = api.put("/api/v1/budgets/team/nope", json={"amount": 5}, headers=ADMIN)
    assert missing.status_code == 404
    bad = api.put("/api/v1/budgets/team/ml", json={"amount": -1}, headers=ADMIN)
    assert bad.status_code == 400
    assert api.delete("/api/v1/budgets/team/ml", headers=ADMIN).status_code == 404


def test_forecasts_cover_teams_without_budgets(api: TestClient, core: Sandman) -> None:
    ann = user_token(api, "ann", team="ml")
    api.post("/api/v1/sessions", json={"mig_profile": "1g.5gb"}, headers=ann)
    later(core, 0.5)  # a 1g costs 7/7 = 1 per hour: half an hour, 0.5
    found = api.get("/api/v1/forecasts", headers=ADMIN).json()
    assert [f["name"] for f in found] == ["ml"]
    assert found[0]["spent"] == pytest.approx(0.5, abs=0.01)
    assert found[0]["hourly_now"] == pytest.approx(1.0)
    assert found[0]["committed"] == pytest.approx(0.5, abs=0.01)  # its TTL's other half
    core.budgets.sweep()
    rendered = core.metrics.registry.render(None, None).decode()
    assert 'gpu_hourly_cost{project="",team="ml"} 1.0' in rendered
