"""``GET /usage``: a session's cost in its user's, team's and project's report as soon as
it ends, who sees what, CSV, and refusals that say why."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import HEADERS as ADMIN
from tests.unit.api.conftest import fake_core
from tests.unit.api.test_accounts_api import core_of, make_user

from sandman.api.app import create_app


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    """An A100-80GB sliced on demand (6.0 an hour) beside a whole RTX 4090 (2.0)."""
    core = fake_core(tmp_path, FakeRuntime(), gpu_topology="mixed", low_priority_discount=0.5)
    with TestClient(create_app(core, run_background=False)) as client:
        yield client
    core.stop()


@pytest.fixture
def people(api: TestClient) -> dict[str, dict[str, str]]:
    for team in ("ml", "cv"):
        assert api.post("/api/v1/teams", json={"name": team}, headers=ADMIN).status_code == 201
    assert (
        api.post("/api/v1/projects", json={"name": "llm", "team": "ml"}, headers=ADMIN).status_code
        == 201
    )
    headers = {
        "alice": make_user(api, "alice"),
        "bob": make_user(api, "bob"),
        "lena": make_user(api, "lena"),
        "otto": make_user(api, "otto", role="operator"),
    }
    for user, team, role in [
        ("alice", "ml", "member"),
        ("lena", "ml", "lead"),
        ("bob", "cv", "member"),
    ]:
        put = api.put(f"/api/v1/teams/{team}/members/{user}", json={"role": role}, headers=ADMIN)
        assert put.status_code == 200, put.text
    return headers


def usage(api: TestClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = api.get("/api/v1/usage", params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def groups(body: dict[str, Any]) -> dict[str | None, float]:
    return {r["group"]: r["cost"] for r in body["rows"] if r["kind"] == "usage"}


def test_a_sessions_cost_is_in_its_teams_and_projects_report_once_it_ends(
    api: TestClient, people: dict[str, dict[str, str]]
) -> None:
    alice = people["alice"]
    made = api.post(
        "/api/v1/sessions",
        json={"mig_profile": "3g.40gb", "team": "ml", "project": "llm"},
        headers=alice,
    )
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    time.sleep(1.1)  # the ledger counts whole seconds
    running = usage(api, ADMIN, group_by="team", period="day")
    assert set(groups(running)) == {"ml"}  # counted up to now while it runs
    assert api.delete(f"/api/v1/sessions/{sid}", headers=alice).status_code == 200
    core = core_of(api)
    with core.db.read() as db:
        from sqlalchemy import select

        from sandman.store.models import LedgerEvent

        events = db.scalars(select(LedgerEvent).where(LedgerEvent.session_id == sid)).all()
    seconds = (max(e.at for e in events) - min(e.at for e in events)).total_seconds()
    expected = round(6.0 * 3 / 7 * seconds / 3600, 6)
    for group_by, group in (
        ("team", "ml"),
        ("project", "llm"),
        ("user", "alice"),
        ("model", "A100-80GB"),
    ):
        body = usage(api, ADMIN, group_by=group_by, period="month")
        assert groups(body).get(group, 0.0) == pytest.approx(expected, abs=1e-5)
        total = body["totals"][-1]
        rows = [r for r in body["rows"] if r["period"] == total["period"]]
        assert sum(r["cost"] for r in rows) == pytest.approx(total["capacity_cost"], abs=1e-4)
    again = usage(api, ADMIN, group_by="team", period="month")
    body = usage(api, ADMIN, group_by="team")
    assert groups(again)["ml"] == groups(body)["ml"]
    assert body["complete"] is True and body["currency"] == "USD"


def test_users_see_their_own_leads_their_teams_operators_everything(
    api: TestClient, people: dict[str, dict[str, str]]
) -> None:
    for user, team in (("alice", "ml"), ("bob", "cv")):
        body = (
            {"gpu_count": 1, "team": team, "priority": "low"} if user == "bob" else {"team": team}
        )
        made = api.post("/api/v1/sessions", json=body, headers=people[user])
        assert made.status_code == 201, made.text
        assert (
            api.delete(f"/api/v1/sessions/{made.json()['id']}", headers=people[user]).status_code
            == 200
        )
    assert set(groups(usage(api, people["alice"]))) <= {"alice"}
    bob = usage(api, people["bob"])
    assert set(groups(bob)) <= {"bob"} and bob["complete"] is False
    assert all(r["kind"] != "idle" for r in bob["rows"])
    assert bob["totals"][0]["capacity_cost"] is None
    assert set(groups(usage(api, people["lena"]))) <= {"alice", "lena"}
    assert "bob" not in groups(usage(api, people["lena"], group_by="user"))
    everyone = usage(api, people["otto"], group_by="team")
    assert any(r["kind"] == "idle" for r in everyone["rows"]) and everyone["complete"] is True


def test_csv_opens_as_a_table(api: TestClient, people: dict[str, dict[str, str]]) -> None:
    response = api.get(
        "/api/v1/usage",
        params={
            "format": "csv",
            "group_by": "model",
            "period": "week",
            "from": "2026-01-01",
            "to": "2026-02-01",
        },
        headers=people["otto"],
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert table and set(table[0]) == {"period", "kind", "group", "gpu_hours", "cost", "currency"}
    assert {row["kind"] for row in table} <= {"usage", "discount", "idle"}


@pytest.mark.parametrize(
    ("params", "says"),
    [({"group_by": "planet"}, "group_by"), ({"period": "year"}, "period"), ({"from": "x"}, "from")],
)
def test_a_wrong_question_is_a_400_saying_why(
    api: TestClient, params: dict[str, str], says: str
) -> None:
    response = api.get("/api/v1/usage", params=params, headers=ADMIN)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_request" and says in response.json()["error"]


def test_an_empty_or_a_huge_window_is_answered_not_refused(api: TestClient) -> None:
    empty = usage(api, ADMIN, **{"from": "2026-02-01", "to": "2026-01-01"})
    assert empty["rows"] == [] and empty["totals"] == []
    huge = usage(api, ADMIN, period="day", **{"from": "0218-12-16"})
    assert 1000 <= len(huge["totals"]) <= 1101 and huge["start"] > "2020"
