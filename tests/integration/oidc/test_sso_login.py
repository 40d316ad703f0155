"""Browser logins through a real OpenID provider: the ID token verified against its
keys, accounts bound to ``(iss, sub)``, roles and teams from the group map, and
the login cookie with its CSRF token."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
from tests.integration.oidc.conftest import World

from sandman.accounts.directory import UserChanges
from sandman.accounts.policy import Role


def audit_of(world: World, actor: str) -> list[dict[str, object]]:
    return [
        {"result": r.result, "detail": r.detail, "target": r.target, "source": r.source}
        for r in world.core.audit.query(actor=actor, action="auth.login")
    ]


def test_first_login_creates_the_account_with_the_mapped_role(world: World) -> None:
    browser = world.browser()
    landed = browser.login(world.url, "alice")
    assert landed.status_code == 200, landed.text  # the default next: /api/v1/me
    assert str(landed.url) == f"{world.url}/api/v1/me"
    me = landed.json()
    assert me["user_id"] == "alice"
    assert me["role"] == "admin"  # gpu-admins; "unrelated" maps to nothing
    assert me["via"] == "cookie"
    assert me["sso"] is True
    assert me["display_name"] == "Alice Admin"
    assert me["email"] == "alice@example.org"
    assert me["last_seen_at"] is not None
    assert me["csrf_token"] == browser.http.cookies["sandman_csrf"]
    # The flow went through the provider's own login and consent pages.
    assert any("/interaction/" in url for url in browser.visited)
    [record] = audit_of(world, "alice")
    assert record["result"] == "ok"
    assert record["source"] == "127.0.0.1"
    detail = record["detail"]
    assert isinstance(detail, dict)
    assert detail["via"] == "oidc"
    assert detail["issuer"] == world.provider.issuer
    assert detail["created"] is True


def test_cookie_attributes(world: World) -> None:
    browser = world.browser()
    response = browser.drive(f"{world.url}/auth/login", "ivan", stop_at=f"{world.url}/api/v1/me")
    assert response.status_code == 303
    cookies = response.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("sandman_session="))
    csrf = next(c for c in cookies if c.startswith("sandman_csrf="))
    assert "HttpOnly" in session and "SameSite=lax" in session and "Path=/" in session
    assert "HttpOnly" not in csrf
    assert "Secure" not in session  # public_url is http here
    assert any(c.startswith("sandman_oidc=") and "Max-Age=0" in c for c in cookies)


def test_groups_give_team_memberships(world: World) -> None:
    carol = world.browser().login(world.url, "carol").json()
    assert carol["user_id"] == "carol"  # "Carol", lower-cased
    assert carol["role"] == "user"
    assert carol["teams"] == {"ml": "lead"}  # ml-leads beats ml-lab
    bob = world.browser().login(world.url, "bob").json()
    assert bob["teams"] == {"ml": "member"}
    team = world.core.accounts.teams.get_team("ml")  # created by the mapping
    assert team.members == {"bob": "member", "carol": "lead"}


def test_next_lands_on_a_path_here_and_never_elsewhere(world: World) -> None:
    landed = world.browser().login(world.url, "grace", next_path="/api/v1/gpus")
    assert str(landed.url) == f"{world.url}/api/v1/gpus"
    assert landed.status_code == 200
    for bad in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        refused = httpx.get(f"{world.url}/auth/login", params={"next": bad})
        assert refused.status_code == 400, bad
        assert "location" not in refused.headers


def test_changes_with_the_cookie_need_the_csrf_token(world: World) -> None:
    browser = world.browser()
    assert browser.login(world.url, "henry").status_code == 200
    change = {"display_name": "Henry H"}
    refused = browser.http.patch(f"{world.url}/api/v1/users/henry", json=change)
    assert refused.status_code == 403
    assert "X-CSRF-Token" in refused.json()["error"]
    csrf = browser.http.cookies["sandman_csrf"]
    accepted = browser.http.patch(
        f"{world.url}/api/v1/users/henry", json=change, headers={"X-CSRF-Token": csrf}
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["display_name"] == "Henry H"


def test_names_that_collide_or_are_reserved_are_refused(world: World) -> None:
    first = world.browser().login(world.url, "sub-jdot")
    assert first.status_code == 200
    assert first.json()["user_id"] == "j_doe"
    second = world.browser().login(world.url, "sub-junder")
    assert second.status_code == 403
    assert "already belongs to another identity" in second.json()["error"]
    assert world.core.accounts.directory.get("j_doe").user_id == "j_doe"  # untouched
    refusal, success = audit_of(world, "j_doe")  # the refusal's actor: the provider's name
    assert (refusal["result"], success["result"]) == ("refused", "ok")
    detail = refusal["detail"]
    assert isinstance(detail, dict)
    assert detail["subject"] == "sub-junder"
    assert refusal["target"] is None  # no account was identified
    root = world.browser().login(world.url, "sub-root")
    assert root.status_code == 403
    assert "reserved" in root.json()["error"]


def test_a_disabled_user_is_refused(world: World) -> None:
    assert world.browser().login(world.url, "dave").status_code == 200
    world.core.accounts.directory.disable("dave")
    refused = world.browser().login(world.url, "dave")
    assert refused.status_code == 403
    assert "disabled" in refused.json()["error"]
    results = [r["result"] for r in audit_of(world, "dave")]
    assert results == ["refused", "ok"]  # newest first


def test_an_account_an_admin_made_is_bound_at_first_login(world: World) -> None:
    made = world.core.accounts.directory.create("erin", UserChanges(role=Role.OPERATOR))
    me = world.browser().login(world.url, "erin").json()
    assert me["user_id"] == "erin"
    assert me["uid"] == made.uid
    assert me["sso"] is True
    # The group map names roles, so the provider's groups decide: no group, user.
    assert me["role"] == "user"
    [record] = audit_of(world, "erin")
    detail = record["detail"]
    assert isinstance(detail, dict)
    assert detail["bound"] is True and detail["created"] is False


def test_logout_needs_csrf_and_ends_the_login(world: World) -> None:
    browser = world.browser()
    assert browser.login(world.url, "alice").status_code == 200
    session = browser.http.cookies["sandman_session"]
    refused = browser.http.post(f"{world.url}/auth/logout")
    assert refused.status_code == 403
    csrf = browser.http.cookies["sandman_csrf"]
    done = browser.http.post(f"{world.url}/auth/logout", headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200, done.text
    assert done.json()["message"] == "alice logged out"
    assert "sandman_session" not in browser.http.cookies
    replayed = httpx.get(f"{world.url}/api/v1/me", cookies={"sandman_session": session})
    assert replayed.status_code == 401
    assert httpx.get(f"{world.url}/auth/logout").status_code == 405


def test_a_callback_from_another_browser_logs_no_one_in(world: World) -> None:
    """Login CSRF: a callback URL made in the attacker's browser is refused in the
    victim's, which has no flow with that state."""
    attacker = world.browser()
    stopped = attacker.drive(
        f"{world.url}/auth/login", "grace", stop_at=f"{world.url}/auth/callback"
    )
    callback = stopped.headers["location"]
    assert parse_qs(urlsplit(callback).query)["code"]
    victim = httpx.get(callback)
    assert victim.status_code == 400
    assert "sandman_session" not in victim.cookies


def test_a_callback_or_exchange_without_a_login_is_refused(world: World) -> None:
    assert httpx.get(f"{world.url}/auth/callback").status_code == 400  # no flow
    assert (
        httpx.post(
            f"{world.url}/auth/cli/token", json={"code": "x", "verifier": "v" * 43}
        ).status_code
        == 400
    )
