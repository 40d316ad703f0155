"""``/auth`` without a provider to talk to: what is refused before any network call,
and what a deployment without single sign-on answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import fake_core

from sandman.accounts.oidc import challenge_of
from sandman.api.app import create_app

SSO = {
    "public_url": "https://gpu.example.org",
    "oidc_issuer": "http://127.0.0.1:1",  # nothing listens there
    "oidc_client_id": "sandman",
}


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[TestClient]:
    core = fake_core(tmp_path, FakeRuntime())
    with TestClient(create_app(core, run_background=False)) as client:
        yield client
    core.stop()


@pytest.fixture
def with_sso(tmp_path: Path) -> Iterator[TestClient]:
    core = fake_core(tmp_path, FakeRuntime(), **SSO)
    with TestClient(create_app(core, run_background=False), base_url=SSO["public_url"]) as client:
        yield client
    core.stop()


def test_without_single_sign_on(plain: TestClient) -> None:
    for response in (
        plain.get("/auth/login", follow_redirects=False),
        plain.get("/auth/callback"),
        plain.post("/auth/cli/token", json={"code": "c", "verifier": "v" * 43}),
    ):
        assert response.status_code == 404
        assert "not configured" in response.json()["error"]
    assert plain.post("/auth/logout").json() == {"message": "no login to end"}
    assert plain.get("/auth/logout").status_code == 405


def test_auth_routes_are_not_api(plain: TestClient) -> None:
    paths = plain.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith("/auth")]


@pytest.mark.parametrize(
    "query",
    [
        {"next": "https://evil.example/"},
        {"cli_port": "80", "cli_state": "s" * 16, "cli_challenge": challenge_of("v")},
        {"cli_port": "40000", "cli_state": "short", "cli_challenge": challenge_of("v")},
        {"cli_port": "40000", "cli_state": "s" * 16},
        {"cli_port": "40000", "cli_state": "s" * 16, "cli_challenge": challenge_of("v"),
         "next": "/x"},
    ],
)  # fmt: skip
def test_bad_login_requests_are_refused_before_the_provider(
    with_sso: TestClient, query: dict[str, str]
) -> None:
    response = with_sso.get("/auth/login", params=query, follow_redirects=False)
    assert response.status_code == 400, response.text
    assert "location" not in response.headers


def test_an_unreachable_provider_is_named(with_sso: TestClient) -> None:
    response = with_sso.get("/auth/login", follow_redirects=False)
    assert response.status_code == 500
    assert "http://127.0.0.1:1/.well-known/openid-configuration" in response.json()["error"]
