"""The portal's forms over the fake runtime: restoring an ended session, managing
environments, and setting quotas and budgets (who may, CSRF, and refusals shown
as the services' messages)."""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import fake_core
from tests.unit.web.test_portal import KEY, World, csrf_of, session_id, start

from sandman.accounts.policy import Role
from sandman.api.app import create_app
from sandman.policy.quotas import ScopeKind
from sandman.web import portal_manage
from sandman.web.portal_manage import is_built, names_of


class ImagesRuntime(FakeRuntime):
    """The fake runtime, with the engine's image tags to say what is built."""

    def __init__(self) -> None:
        super().__init__()
        self.tags = {"sandman-workspace:latest", "registry.example/mine:1"}

    def image_tags(self) -> set[str]:
        return set(self.tags)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    core = fake_core(
        tmp_path,
        ImagesRuntime(),
        gpu_topology="h100-80gb-x8",
        default_mig_profile="1g.10gb",
        create_workers=2,
        create_wait=0.3,
    )
    app = create_app(core, run_background=False)
    with TestClient(app):
        yield World(core, app)
    core.stop()


def flash(client: TestClient, path: str) -> str:
    """The page after a redirect, with its one-shot message."""
    return html.unescape(client.get(path).text)


def wait_status(world: World, sid: str, status: str) -> None:
    deadline = time.monotonic() + 10
    while world.core.sessions.get(sid).status != status:
        assert time.monotonic() < deadline, world.core.sessions.get(sid).status
        time.sleep(0.05)


def ended_session(world: World, client: TestClient) -> str:
    client.post("/ui/keys", data={"csrf_token": csrf_of(client), "add": KEY})
    sid = session_id(start(client))
    wait_status(world, sid, "running")
    ended = client.post(f"/ui/sessions/{sid}/end", data={"csrf_token": csrf_of(client)})
    assert ended.status_code == 303
    return sid


# -- restore ---------------------------------------------------------------------------
def test_ended_sessions_are_listed_with_a_restore_button(world: World) -> None:
    alice = world.person("alice")
    assert 'id="ended-sessions"' not in alice.get("/ui/").text
    sid = ended_session(world, alice)
    home = alice.get("/ui/").text
    assert f'data-ended="{sid}"' in home
    assert f'name="restore" value="{sid}"' in home


def test_restore_starts_a_session_like_the_ended_one(world: World) -> None:
    alice = world.person("alice")
    sid = ended_session(world, alice)
    assert alice.post("/ui/sessions/restore", data={"restore": sid}).status_code == 403
    restored = alice.post(
        "/ui/sessions/restore", data={"csrf_token": csrf_of(alice), "restore": sid}
    )
    assert restored.status_code == 303
    new = session_id(restored)
    assert new != sid
    row = world.core.sessions.get(new)
    assert row.labels["restored_from"] == sid
    assert row.mig_profile == world.core.sessions.get(sid).mig_profile == "1g.10gb"
    assert f"restored from {sid}" in flash(alice, f"/ui/sessions/{new}")


def test_restore_refusals_are_shown_on_the_page(world: World) -> None:
    alice = world.person("alice")
    sid = ended_session(world, alice)
    csrf = csrf_of(alice)
    running = session_id(start(alice))  # one session per user: a second is refused
    refused = alice.post("/ui/sessions/restore", data={"csrf_token": csrf, "restore": sid})
    assert refused.status_code == 303 and refused.headers["location"] == "/ui/"
    page = flash(alice, "/ui/")
    assert 'class="flash error"' in page
    assert running in page  # the message names the active session
    # An active session is not restored: the service's 409.
    again = alice.post("/ui/sessions/restore", data={"csrf_token": csrf, "restore": running})
    assert again.status_code == 303
    assert "only an ended session is restored" in flash(alice, "/ui/")
    # Another user's session is 404, as if it did not exist.
    mallory = world.person("mallory")
    stolen = mallory.post(
        "/ui/sessions/restore", data={"csrf_token": csrf_of(mallory), "restore": sid}
    )
    assert stolen.status_code == 404
    assert len(world.core.sessions.list_sessions("active", "mallory", queued=True)) == 0


# -- environments ----------------------------------------------------------------------
def test_environments_page_lists_them_for_operators_and_admins_only(world: World) -> None:
    portal_manage._images.clear()
    root = world.person("ada", Role.ADMIN)
    page = root.get("/ui/environments")
    assert page.status_code == 200
    assert 'data-environment="base"' in page.text and 'data-environment="jupyter"' in page.text
    assert "built in" in page.text
    assert 'href="/ui/environments"' in page.text  # in the menu
    olga = world.person("olga", Role.OPERATOR)
    assert olga.get("/ui/environments").status_code == 200
    assert 'href="/ui/environments"' in olga.get("/ui/").text
    alice = world.person("alice")
    assert alice.get("/ui/environments").status_code == 403
    assert 'href="/ui/environments"' not in alice.get("/ui/").text
    refused = alice.post(
        "/ui/environments",
        data={"csrf_token": csrf_of(alice), "name": "mine", "image": "registry.example/mine:1"},
    )
    assert refused.status_code == 403
    assert "mine" not in world.core.environments.all()


def test_add_change_and_delete_an_environment(world: World) -> None:
    portal_manage._images.clear()
    root = world.person("ada", Role.ADMIN)
    csrf = csrf_of(root)
    form = {"csrf_token": csrf, "name": "mine", "image": "registry.example/mine:1"}
    added = root.post(
        "/ui/environments", data={**form, "app_jupyterlab": "on", "allowed_teams": "ml, vision"}
    )
    assert added.status_code == 303
    mine = world.core.environments.get("mine")
    assert mine.image == "registry.example/mine:1"
    assert "jupyterlab" in mine.apps and mine.allowed_teams == ("ml", "vision")
    row = _row(root.get("/ui/environments").text, "mine")
    assert "registered" in row and '<td class="built">yes</td>' in row
    assert root.post("/ui/environments", data=form).status_code == 303  # exists: refused
    assert "exists" in flash(root, "/ui/environments")
    changed = root.post(
        "/ui/environments/mine",
        data={"csrf_token": csrf, "image": "", "default_profile": "3g.40gb", "app_vscode": "on"},
    )
    assert changed.status_code == 303
    mine = world.core.environments.get("mine")
    assert mine.default_profile == "3g.40gb" and mine.image == "registry.example/mine:1"
    assert "vscode" in mine.apps and "jupyterlab" not in mine.apps and mine.allowed_teams == ()
    bad = root.post("/ui/environments/mine", data={"csrf_token": csrf, "image": "Not An Image"})
    assert bad.status_code == 303
    assert "is not an image reference" in flash(root, "/ui/environments")
    builtin = root.post("/ui/environments/base/delete", data={"csrf_token": csrf})
    assert builtin.status_code == 303
    assert "is built in" in flash(root, "/ui/environments")
    assert "base" in world.core.environments.all()
    gone = root.post("/ui/environments/mine/delete", data={"csrf_token": csrf})
    assert gone.status_code == 303
    assert "mine" not in world.core.environments.all()
    assert root.post("/ui/environments/mine/delete", data={}).status_code == 403  # no CSRF


def _row(page: str, name: str) -> str:
    start_at = page.index(f'data-environment="{name}"')
    return page[start_at : page.index("</tr>", start_at)]


def test_whether_an_image_is_built() -> None:
    tags = {"sandman-workspace:latest", "a/b:1"}
    assert is_built("sandman-workspace", tags) is True
    assert is_built("sandman-workspace:latest", tags) is True
    assert is_built("a/b:2", tags) is False
    assert is_built("a/b", tags) is False
    assert is_built("anything", None) is None
    assert names_of("ml, vision  x,,y") == ["ml", "vision", "x", "y"]


# -- quotas and budgets ----------------------------------------------------------------
def _quota(world: World, kind: ScopeKind, name: str) -> dict[str, Any] | None:
    for quota in world.core.quotas.list_quotas():
        if quota.kind == kind.value and quota.name == name:
            return dict(quota.limits)
    return None


def test_admin_sets_a_users_and_a_teams_quota(world: World) -> None:
    root = world.person("ada", Role.ADMIN)
    world.person("alice")
    csrf = csrf_of(root, "/ui/people")
    assert 'id="quota-form"' in root.get("/ui/people").text
    done = root.post(
        "/ui/quotas",
        data={
            "csrf_token": csrf,
            "kind": "user",
            "name": "alice",
            "max_sessions": "2",
            "max_slices": "3.5",
            "allowed_profiles": "1g.10gb, 2g.20gb",
            "max_ttl_minutes": "",
        },
    )
    assert done.status_code == 303
    limits = _quota(world, ScopeKind.USER, "alice")
    assert limits is not None
    assert limits["max_sessions"] == 2 and limits["max_slices"] == 3.5
    assert sorted(limits["allowed_profiles"]) == ["1g.10gb", "2g.20gb"]
    assert "max_ttl_minutes" not in limits or limits["max_ttl_minutes"] is None
    world.core.accounts.teams.create_team("ml", None)
    team = root.post(
        "/ui/quotas",
        data={"csrf_token": csrf, "kind": "team", "name": "ml", "guaranteed_slices": "7"},
    )
    assert team.status_code == 303
    assert (_quota(world, ScopeKind.TEAM, "ml") or {})["guaranteed_slices"] == 7


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_sessions": "two"}, "max_sessions: a whole number"),
        ({"max_ttl_minutes": "0"}, "max_ttl_minutes: Input should be greater than or equal to 1"),
        ({"allowed_priorities": "urgent"}, "allowed_priorities"),
        ({"kind": "galaxy"}, "kind: user, team or project"),
        ({"name": "Bad Name!"}, "Bad Name!"),
    ],
)
def test_quota_form_errors_are_shown(world: World, fields: dict[str, str], message: str) -> None:
    root = world.person("ada", Role.ADMIN)
    data = {"csrf_token": csrf_of(root, "/ui/people"), "kind": "user", "name": "ada", **fields}
    answer = root.post("/ui/quotas", data=data)
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/people"
    page = flash(root, "/ui/people")
    assert 'class="flash error"' in page and message in page
    assert world.core.quotas.list_quotas() == []


def test_admin_sets_a_team_budget_and_sees_errors(world: World) -> None:
    root = world.person("ada", Role.ADMIN)
    world.core.accounts.teams.create_team("ml", None)
    csrf = csrf_of(root, "/ui/people")
    done = root.post(
        "/ui/budgets",
        data={
            "csrf_token": csrf,
            "kind": "team",
            "name": "ml",
            "amount": "1200.5",
            "thresholds": "80, 50",
            "action": "block-new",
        },
    )
    assert done.status_code == 303
    (status,) = world.core.budgets.statuses()
    assert status.budget.amount == 1200.5
    assert status.budget.thresholds == (50, 80) and status.budget.action == "block-new"
    assert "1,200.50" in root.get("/ui/people").text
    for fields, message in (
        ({"amount": "-3"}, "amount must be a number above 0"),
        ({"amount": "lots"}, "amount must be a number above 0"),
        ({"thresholds": "0"}, "thresholds must be whole percentages"),
        ({"action": "explode"}, "action must be one of"),
        ({"name": "nobody"}, "nobody"),
    ):
        data = {"csrf_token": csrf, "kind": "team", "name": "ml", "amount": "10", **fields}
        assert root.post("/ui/budgets", data=data).status_code == 303
        page = flash(root, "/ui/people")
        assert 'class="flash error"' in page and message in page, message
    assert world.core.budgets.statuses()[0].budget.amount == 1200.5


def test_operators_set_limits_and_users_cannot(world: World) -> None:
    olga = world.person("olga", Role.OPERATOR)
    alice = world.person("alice")
    assert 'id="quota-form"' in olga.get("/ui/people").text
    assert alice.get("/ui/people").status_code == 403
    for client, status in ((alice, 403), (olga, 303)):
        data = {"csrf_token": csrf_of(client), "kind": "user", "name": "alice", "max_sessions": "9"}
        assert client.post("/ui/quotas", data=data).status_code == status
        data = {"csrf_token": csrf_of(client), "kind": "team", "name": "x", "amount": "5"}
        assert client.post("/ui/budgets", data=data).status_code == status
    assert (_quota(world, ScopeKind.USER, "alice") or {})["max_sessions"] == 9
