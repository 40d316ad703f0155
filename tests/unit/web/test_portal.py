"""The portal over the fake runtime: status codes, who sees what, CSRF, the
security headers and the ssh-config download."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import fake_core

from sandman.accounts.directory import UserChanges
from sandman.accounts.policy import Role, Scope
from sandman.api.app import create_app
from sandman.core import Sandman

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHHSOcakhHEsJrMWYR0gZy/jY4HgkL3tLCF/gZoIE3rX a@b"


class World:
    def __init__(self, core: Sandman, app: Any) -> None:
        self.core = core
        self.app = app

    def person(self, user_id: str, role: Role = Role.USER) -> TestClient:
        """A browser logged in as ``user_id`` through the token form."""
        self.core.accounts.directory.create(user_id, UserChanges(role=role))
        _, secret = self.core.credentials.create_token(
            user_id, "portal", frozenset(Scope), None, user_id
        )
        client = TestClient(self.app, follow_redirects=False)
        login(client, secret)
        return client


def login(client: TestClient, secret: str) -> Any:
    page = client.get("/ui/login")
    token = CSRF.search(page.text)
    assert token is not None
    return client.post(
        "/ui/login", data={"csrf_token": token.group(1), "token": secret, "next": "/ui/"}
    )


def csrf_of(client: TestClient, path: str = "/ui/") -> str:
    found = CSRF.search(client.get(path).text)
    assert found is not None
    return found.group(1)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    core = fake_core(
        tmp_path,
        FakeRuntime(),
        gpu_topology="h100-80gb-x8",
        default_mig_profile="1g.10gb",
        create_workers=2,
        create_wait=0.3,
    )
    app = create_app(core, run_background=False)
    with TestClient(app):
        yield World(core, app)
    core.stop()


def start(client: TestClient, **fields: str) -> Any:
    form = {"csrf_token": csrf_of(client), "profile": "1g.10gb", "ttl_minutes": "30", **fields}
    return client.post("/ui/sessions/new", data=form)


def session_id(response: Any) -> str:
    found = re.search(r"/ui/sessions/([0-9a-f-]{36})", response.headers["location"])
    assert found is not None
    return found.group(1)


def test_redirects_to_the_portal(world: World) -> None:
    client = TestClient(world.app, follow_redirects=False)
    for path in ("/", "/k8s-monitor", "/k8s-monitor/", "/ui"):
        response = client.get(path)
        assert response.status_code == 307, path
        assert response.headers["location"] == "/ui/"
    # The API's seed routes stay the API's.
    assert client.get("/sessions").status_code == 401
    assert client.get("/k8s-monitor/api/v1/gpu/overview").status_code == 401


def test_pages_need_a_login(world: World) -> None:
    client = TestClient(world.app, follow_redirects=False)
    response = client.get("/ui/gpus")
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=/ui/gpus"
    fragment = client.get("/ui/fragments/my-sessions", headers={"HX-Request": "true"})
    assert fragment.status_code == 401
    assert fragment.headers["HX-Redirect"] == "/ui/login"


def test_login_page_headers_and_static_files(world: World) -> None:
    client = TestClient(world.app)
    page = client.get("/ui/login")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert "<script>" not in page.text  # every script is a file
    assert "single sign-on" not in page.text  # no issuer configured: the token form only
    for path in ("/ui/static/vendor/htmx/htmx.min.js", "/ui/static/portal.js"):
        assert client.get(path).status_code == 200


def test_token_login_refusals(world: World) -> None:
    client = TestClient(world.app, follow_redirects=False)
    # No form secret: a cross-site login attempt.
    refused = client.post("/ui/login", data={"token": "sm_x", "csrf_token": "forged"})
    assert refused.status_code == 403
    world.core.accounts.directory.create("rita", UserChanges())
    _, reader = world.core.credentials.create_token(
        "rita", "read", frozenset({Scope.READ}), None, "rita"
    )
    answer = login(client, reader)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/login")
    assert "limited to some scopes" in client.get(answer.headers["location"]).text
    assert client.get("/ui/").status_code == 303  # still not logged in


def test_user_starts_sees_extends_and_ends_a_session(world: World) -> None:
    alice = world.person("alice")
    home = alice.get("/ui/")
    assert home.status_code == 200
    assert "1g.10gb" in home.text and "Start a session" in home.text
    assert "/ui/gpus" not in home.text  # no admin pages in a user's menu
    created = start(alice)
    assert created.status_code == 200  # no key yet: the generated one is shown once
    assert "BEGIN OPENSSH PRIVATE KEY" in created.text
    sid = re.search(r"/ui/sessions/([0-9a-f-]{36})", created.text)
    assert sid is not None
    page = alice.get(f"/ui/sessions/{sid.group(1)}")
    assert page.status_code == 200
    assert 'id="ssh-command">ssh ' in page.text
    assert 'class="countdown"' in page.text or "starting" in page.text
    status = alice.get(f"/ui/sessions/{sid.group(1)}/status")
    assert status.status_code == 200
    csrf = csrf_of(alice)
    extended = alice.post(
        f"/ui/sessions/{sid.group(1)}/extend", data={"csrf_token": csrf, "ttl_minutes": "90"}
    )
    assert extended.status_code == 303
    ended = alice.post(f"/ui/sessions/{sid.group(1)}/end", data={"csrf_token": csrf})
    assert ended.status_code == 303
    assert world.core.sessions.get(sid.group(1)).status == "deleted"


def test_csrf_refused_without_the_token(world: World) -> None:
    alice = world.person("alice")
    assert alice.post("/ui/sessions/new", data={"profile": "1g.10gb"}).status_code == 403
    wrong = alice.post("/ui/sessions/new", data={"csrf_token": "nope", "profile": "1g.10gb"})
    assert wrong.status_code == 403
    assert "CSRF" in wrong.text
    assert alice.post("/ui/keys", data={"add": KEY}).status_code == 403
    assert alice.post("/ui/tokens", data={"name": "x"}).status_code == 403
    assert world.core.sessions.list_sessions("active") == []


def test_ssh_config_download(world: World) -> None:
    bob = world.person("bob")
    keys = bob.post("/ui/keys", data={"csrf_token": csrf_of(bob), "add": KEY})
    assert keys.status_code == 303
    created = start(bob)
    assert created.status_code == 303  # a key of his own: straight to the session
    sid = session_id(created)
    deadline = time.monotonic() + 10
    while world.core.sessions.get(sid).status != "running" and time.monotonic() < deadline:
        time.sleep(0.05)  # the portal starts sessions without waiting for them
    download = bob.get(f"/ui/sessions/{sid}/ssh-config")
    assert download.status_code == 200
    assert "attachment" in download.headers["content-disposition"]
    text = download.text
    assert f"Host sandman-{sid[:8]}" in text
    assert "StrictHostKeyChecking yes" in text
    assert "User bob" in text
    key = world.core.sessions.get(sid).host_public_key
    assert key is not None and key.split()[1] in text


def test_another_user_sees_nothing_of_it(world: World) -> None:
    alice = world.person("alice")
    sid = re.search(r"/ui/sessions/([0-9a-f-]{36})", start(alice).text)
    assert sid is not None
    mallory = world.person("mallory")
    assert mallory.get(f"/ui/sessions/{sid.group(1)}").status_code == 404
    assert mallory.get(f"/ui/sessions/{sid.group(1)}/ssh-config").status_code == 404
    ended = mallory.post(f"/ui/sessions/{sid.group(1)}/end", data={"csrf_token": csrf_of(mallory)})
    assert ended.status_code == 404
    assert sid.group(1) not in mallory.get("/ui/").text
    for page in ("/ui/gpus", "/ui/sessions", "/ui/queue", "/ui/people", "/ui/costs", "/ui/audit"):
        assert mallory.get(page).status_code == 403, page


def test_admin_pages(world: World) -> None:
    alice = world.person("alice")
    sid = re.search(r"/ui/sessions/([0-9a-f-]{36})", start(alice).text)
    assert sid is not None
    root = world.person("root-admin", Role.ADMIN)
    for page in (
        "/ui/",
        "/ui/gpus",
        "/ui/fragments/gpus",
        "/ui/sessions",
        "/ui/sessions?status=all&user=alice",
        "/ui/fragments/sessions",
        "/ui/queue",
        "/ui/people",
        "/ui/costs",
        "/ui/costs?by=project",
        "/ui/audit",
        "/ui/keys",
        "/ui/tokens",
        "/ui/notifications",
        "/ui/usage",
    ):
        response = root.get(page)
        assert response.status_code == 200, page
    gpus = root.get("/ui/gpus").text
    assert f'data-session="{sid.group(1)}"' in gpus
    assert "alice" in gpus
    assert root.get(f"/ui/sessions/{sid.group(1)}").status_code == 200
    assert root.get("/ui/sessions?status=bogus").status_code == 400


def test_operator_sees_admin_pages_but_not_roles(world: World) -> None:
    olga = world.person("olga", Role.OPERATOR)
    home = olga.get("/ui/").text
    for page in ("/ui/gpus", "/ui/sessions", "/ui/queue", "/ui/audit"):
        assert page in home


def test_tokens_and_notifications(world: World) -> None:
    carol = world.person("carol")
    made = carol.post("/ui/tokens", data={"csrf_token": csrf_of(carol), "name": "laptop"})
    assert made.status_code == 200
    assert re.search(r"sm_[A-Za-z0-9_-]{20,}", made.text)
    token = next(t for t in world.core.credentials.list_tokens("carol") if t.name == "laptop")
    revoked = carol.post(f"/ui/tokens/{token.id}/revoke", data={"csrf_token": csrf_of(carol)})
    assert revoked.status_code == 303
    assert world.core.credentials.token(token.id).revoked_at is not None
    saved = carol.post(
        "/ui/notifications",
        data={"csrf_token": csrf_of(carol), "email": "carol@example.org", "terminal": "on"},
    )
    assert saved.status_code == 303
    channels = world.core.notifications.get_user("carol").channels
    assert channels.email == "carol@example.org" and channels.terminal
