"""Logging out of the portal ends the apps origin's logins of that user."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.unit.web.conftest import Stack
from tests.unit.web.test_portal import csrf_of, login

from sandman.errors import Unauthorized
from sandman.web.apps_access import COOKIE


def test_after_logout_the_apps_cookie_no_longer_works(stack: Stack) -> None:
    portal = TestClient(stack.api.app, follow_redirects=False)
    assert login(portal, stack.tokens["alice"]).status_code == 303
    csrf = csrf_of(portal)
    opened = portal.post(
        f"/ui/sessions/{stack.session_id}/apps/jupyterlab", data={"csrf_token": csrf}
    )
    assert opened.status_code == 303
    with httpx.Client() as browser:
        handshake = browser.get(opened.headers["location"])
        assert handshake.status_code == 303
        assert browser.cookies.get(COOKIE)
        assert browser.get(stack.lab("ping")).text == "pong"
        # A second apps login of alice's (another browser) ends too; bob's stays.
        other = httpx.Client()
        other.get(
            stack.api.post(
                f"/api/v1/sessions/{stack.session_id}/apps/jupyterlab/open",
                headers=stack.bearer("alice"),
            ).json()["url"]
        )
        assert other.get(stack.lab("ping")).status_code == 200
        refused = portal.post("/auth/logout?next=/ui/login", data={})
        assert refused.status_code == 403  # no CSRF: nothing ends
        assert browser.get(stack.lab("ping")).status_code == 200
        out = portal.post("/auth/logout?next=/ui/login", data={"csrf_token": csrf})
        assert out.status_code == 303
        after = browser.get(stack.lab("ping"))
        assert after.status_code == 401
        assert "expired" in after.json()["error"]
        assert other.get(stack.lab("ping")).status_code == 401
        other.close()


def test_end_logins_leaves_other_users_alone(stack: Stack) -> None:
    alice = stack.core.credentials.check_token(stack.tokens["alice"])
    opened = stack.core.apps.exchange(stack.core.apps.mint(alice, stack.session_id, "jupyterlab"))
    assert stack.core.apps.end_logins("bob") == 0
    assert stack.core.apps.caller(None, opened.secret).user_id == "alice"
    assert stack.core.apps.end_logins("alice") == 1
    with pytest.raises(Unauthorized):
        stack.core.apps.caller(None, opened.secret)
