"""Self-service through the API: users act on their own sessions only, leads on
their team's, operators on everyone's; refusals say what is missing; every change
and every refusal of a known caller is on record."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.unit.api.conftest import HEADERS as ADMIN

from sandman.core import Sandman


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_user(api: TestClient, user_id: str, role: str = "user", **fields: Any) -> dict[str, str]:
    """Create a user with the bootstrap token and mint them a token; their headers."""
    created = api.post("/api/v1/users", json={"user_id": user_id, **fields}, headers=ADMIN)
    assert created.status_code == 201, created.text
    if role != "user":
        changed = api.patch(f"/api/v1/users/{user_id}", json={"role": role}, headers=ADMIN)
        assert changed.status_code == 200, changed.text
    token = api.post("/api/v1/tokens", json={"name": "test", "user_id": user_id}, headers=ADMIN)
    assert token.status_code == 201, token.text
    return bearer(token.json()["token"])


def core_of(api: TestClient) -> Sandman:
    app: Any = api.app
    core: Sandman = app.state.sandman
    return core


@pytest.fixture
def people(api: TestClient) -> dict[str, dict[str, str]]:
    assert api.post("/api/v1/teams", json={"name": "ml"}, headers=ADMIN).status_code == 201
    assert api.post("/api/v1/teams", json={"name": "cv"}, headers=ADMIN).status_code == 201
    headers = {
        "alice": make_user(api, "alice"),
        "bob": make_user(api, "bob"),
        "lena": make_user(api, "lena"),
        "otto": make_user(api, "otto", role="operator"),
    }
    for user, team, role in [
        ("alice", "ml", "member"),
        ("bob", "ml", "member"),
        ("lena", "ml", "lead"),
        ("bob", "cv", "member"),
    ]:
        put = api.put(f"/api/v1/teams/{team}/members/{user}", json={"role": role}, headers=ADMIN)
        assert put.status_code == 200, put.text
    return headers


def test_a_user_starts_reads_extends_and_ends_only_their_own(
    api: TestClient, people: dict[str, dict[str, str]]
) -> None:
    alice, bob = people["alice"], people["bob"]
    mine = api.post("/api/v1/sessions", json={"team": "ml"}, headers=alice)
    assert mine.status_code == 201, mine.text
    assert mine.json()["user_id"] == "alice" and mine.json()["team"] == "ml"
    sid = mine.json()["id"]
    refused = api.post("/api/v1/sessions", json={"user_id": "bob"}, headers=alice)
    assert refused.status_code == 403 and "another user's" in refused.json()["error"]

    bobs = api.post("/api/v1/sessions", json={"team": "cv"}, headers=bob).json()["id"]
    listed = api.get("/api/v1/sessions", headers=alice)
    assert [s["id"] for s in listed.json()] == [sid] and listed.headers["X-Total-Count"] == "1"
    assert api.get(f"/api/v1/sessions/{bobs}", headers=alice).status_code == 404
    assert (
        api.patch(f"/api/v1/sessions/{bobs}", json={"ttl_minutes": 5}, headers=alice).status_code
        == 404
    )
    assert api.delete(f"/api/v1/sessions/{bobs}", headers=alice).status_code == 404
    assert api.get(f"/api/v1/sessions/{bobs}", headers=bob).json()["status"] == "running"

    assert (
        api.patch(f"/api/v1/sessions/{sid}", json={"ttl_minutes": 5}, headers=alice).status_code
        == 200
    )
    everything = api.delete("/api/v1/sessions", headers=alice)
    assert everything.status_code == 403 and "operator or admin" in everything.json()["error"]
    ended = api.delete(f"/api/v1/sessions/{sid}", headers=alice)
    assert ended.status_code == 200
    assert ended.json()["session"]["end_reason"] == "deleted through the API by alice"


def test_a_team_lead_sees_and_ends_the_teams_sessions(
    api: TestClient, people: dict[str, dict[str, str]]
) -> None:
    in_ml = api.post("/api/v1/sessions", json={"team": "ml"}, headers=people["alice"]).json()["id"]
    in_cv = api.post("/api/v1/sessions", json={"team": "cv"}, headers=people["bob"]).json()["id"]
    lena = people["lena"]
    assert {s["id"] for s in api.get("/api/v1/sessions", headers=lena).json()} == {in_ml}
    assert api.get(f"/api/v1/sessions/{in_cv}", headers=lena).status_code == 404
    extend = api.patch(f"/api/v1/sessions/{in_ml}", json={"ttl_minutes": 5}, headers=lena)
    assert extend.status_code == 403
    assert api.delete(f"/api/v1/sessions/{in_ml}", headers=lena).status_code == 200


def test_an_operator_sees_and_ends_everything_but_changes_no_roles(
    api: TestClient, people: dict[str, dict[str, str]]
) -> None:
    api.post("/api/v1/sessions", json={}, headers=people["alice"])
    otto = people["otto"]
    assert len(api.get("/api/v1/sessions", headers=otto).json()) == 1
    promote = api.patch("/api/v1/users/alice", json={"role": "admin"}, headers=otto)
    assert promote.status_code == 403 and "role admin" in promote.json()["error"]
    minted = api.post("/api/v1/tokens", json={"name": "x", "user_id": "alice"}, headers=otto)
    assert minted.status_code == 403
    assert api.delete("/api/v1/sessions", headers=otto).status_code == 200


def test_charges_follow_membership(api: TestClient, people: dict[str, dict[str, str]]) -> None:
    alice = people["alice"]
    unknown = api.post("/api/v1/sessions", json={"team": "nope"}, headers=alice)
    assert unknown.status_code == 400 and "no team" in unknown.json()["error"]
    foreign = api.post("/api/v1/sessions", json={"team": "cv"}, headers=alice)
    assert foreign.status_code == 403 and "not a member" in foreign.json()["error"]
    # An admin's unknown names are created.
    made = api.post(
        "/api/v1/sessions",
        json={"user_id": "newbie", "team": "fresh", "project": "p1"},
        headers=ADMIN,
    )
    assert made.status_code == 201, made.text
    assert api.get("/api/v1/projects/p1", headers=ADMIN).json()["team"] == "fresh"
    newbie = api.get("/api/v1/users/newbie", headers=ADMIN).json()
    assert newbie["role"] == "user" and newbie["status"] == "active"


def test_defaults_charge_a_session_that_names_nothing(
    api: TestClient, people: dict[str, dict[str, str]]
) -> None:
    assert (
        api.post("/api/v1/projects", json={"name": "llm", "team": "ml"}, headers=ADMIN).status_code
        == 201
    )
    set_default = api.patch(
        "/api/v1/users/alice",
        json={"default_team": "ml", "default_project": "llm"},
        headers=people["alice"],
    )
    assert set_default.status_code == 200, set_default.text
    body = api.post("/api/v1/sessions", json={}, headers=people["alice"]).json()
    assert (body["team"], body["project"]) == ("ml", "llm")


def test_the_bootstrap_token_must_name_the_user(api: TestClient) -> None:
    missing = api.post("/api/v1/sessions", json={}, headers=ADMIN)
    assert missing.status_code == 400 and "user_id is required" in missing.json()["error"]


def test_disabling_a_user_ends_their_session_and_revokes_their_token(
    api: TestClient, people: dict[str, dict[str, str]]
) -> None:
    sid = api.post("/api/v1/sessions", json={}, headers=people["alice"]).json()["id"]
    disabled = api.delete("/api/v1/users/alice", headers=people["otto"])
    assert disabled.status_code == 200 and disabled.json()["status"] == "disabled"
    ended = api.get(f"/api/v1/sessions/{sid}", headers=ADMIN).json()
    assert ended["status"] == "deleted" and ended["end_reason"] == "the account was disabled"
    assert api.get("/api/v1/sessions", headers=people["alice"]).status_code == 401
    again = api.post("/api/v1/sessions", json={"user_id": "alice"}, headers=ADMIN)
    assert again.status_code == 409 and "disabled" in again.json()["error"]
    # The uid stays with the user: nothing deletes a user.
    assert api.get("/api/v1/users/alice", headers=ADMIN).json()["uid"] > 0


def test_revoking_a_token_takes_effect_at_once(
    api: TestClient, people: dict[str, dict[str, str]]
) -> None:
    alice = people["alice"]
    second = api.post("/api/v1/tokens", json={"name": "ci", "scopes": ["read"]}, headers=alice)
    assert second.status_code == 201
    reader = bearer(second.json()["token"])
    assert api.get("/api/v1/sessions", headers=reader).status_code == 200
    no_write = api.post("/api/v1/sessions", json={}, headers=reader)
    assert no_write.status_code == 403 and "scope write" in no_write.json()["error"]
    listed = api.get("/api/v1/tokens", headers=alice).json()
    assert {t["name"] for t in listed} == {"test", "ci"}
    assert all("token" not in t and "secret_hash" not in t for t in listed)
    assert api.delete(f"/api/v1/tokens/{second.json()['id']}", headers=alice).status_code == 200
    assert api.get("/api/v1/sessions", headers=reader).status_code == 401
    # Another user's token is not even visible.
    assert api.delete(f"/api/v1/tokens/{listed[0]['id']}", headers=people["bob"]).status_code == 404


def test_me_says_who_the_caller_is(api: TestClient, people: dict[str, dict[str, str]]) -> None:
    me = api.get("/api/v1/me", headers=people["lena"]).json()
    assert me["user_id"] == "lena" and me["teams"] == {"ml": "lead"} and me["via"] == "token"
    assert api.get("/api/v1/me", headers=ADMIN).json()["user_id"] == "bootstrap-admin"


def test_a_cookie_change_needs_the_csrf_token(
    api: TestClient, people: dict[str, dict[str, str]]
) -> None:
    login = core_of(api).credentials.create_login("alice")
    api.cookies.set("sandman_session", login.secret)
    try:
        me = api.get("/api/v1/me")
        assert me.status_code == 200 and me.json()["csrf_token"] == login.csrf_token
        forged = api.post("/api/v1/sessions", json={})
        assert forged.status_code == 403 and "X-CSRF-Token" in forged.json()["error"]
        made = api.post("/api/v1/sessions", json={}, headers={"X-CSRF-Token": login.csrf_token})
        assert made.status_code == 201, made.text
    finally:
        api.cookies.clear()


def test_changes_and_known_refusals_are_audited_unknown_ones_are_not(
    api: TestClient, people: dict[str, dict[str, str]]
) -> None:
    sid = api.post("/api/v1/sessions", json={}, headers=people["alice"]).json()["id"]
    api.delete("/api/v1/sessions", headers=people["alice"])  # refused: 403
    api.delete("/api/v1/sessions", headers=bearer("sm_not-a-token"))  # 401: not recorded
    records = api.get("/api/v1/audit", params={"actor": "alice"}, headers=ADMIN).json()
    assert [(r["action"], r["result"]) for r in records] == [
        ("session.end_all", "refused"),
        ("session.create", "ok"),
    ]
    assert records[1]["target"] == sid and records[1]["request_id"]
    assert all("sm_" not in str(r) for r in api.get("/api/v1/audit", headers=ADMIN).json())
    assert api.get("/api/v1/audit", headers=people["alice"]).status_code == 403
    assert core_of(api).audit.verify().ok


def test_unknown_callers_get_401_saying_what_is_missing(api: TestClient) -> None:
    bare = api.get("/api/v1/sessions")
    assert bare.status_code == 401 and "Authorization: Bearer" in bare.json()["error"]
    assert api.get("/api/v1/sessions", headers=bearer("guess")).status_code == 401
