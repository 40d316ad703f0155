"""``sandman login``: the loopback flow through a real provider, ending with a token
file of mode 0600 that the CLI's API client uses."""

from __future__ import annotations

import stat
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from tests.integration.oidc.conftest import World

from sandman.cli import client, credentials
from sandman.cli.login import LoginFailed, login_flow


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    for name in ("SANDMAN_ADMIN_TOKEN", "SANDMAN_TOKEN", "SANDMAN_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SANDMAN_DATA_DIR", str(tmp_path / "no-data-dir"))
    return home


def test_cli_login_saves_a_working_token(world: World, config_home: Path) -> None:
    browser = world.browser()
    pages: list[httpx.Response] = []

    def open_browser(url: str) -> None:
        assert url.startswith(f"{world.url}/auth/login?cli_port=")
        pages.append(browser.drive(url, "frank"))

    done = login_flow(world.url, open_browser, timeout=30, hostname="laptop")
    assert done.user_id == "frank"
    [page] = pages
    assert page.status_code == 200 and "Logged in" in page.text  # the CLI's own page
    # The token never travelled in a URL: only the one-time code did.
    assert not any(done.token in url for url in browser.visited)
    saved = config_home / "sandman" / "credentials.json"
    assert done.saved_to == saved
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE(saved.parent.stat().st_mode) == 0o700
    assert credentials.load() == (world.url, done.token)
    # The CLI's API client uses it when no token is in the environment.
    me = client._call("GET", "/me")
    assert me["user_id"] == "frank"
    assert me["token_name"] == "cli@laptop"
    assert me["teams"] == {"ml": "member"}
    token = world.core.credentials.token(done.token_id)
    assert token.created_by == "frank"
    assert token.expires_at is not None
    # The one-time code was used once; a second exchange gets nothing.
    code_url = next(url for url in browser.visited if "/callback?code=" in url)
    code = parse_qs(urlsplit(code_url).query)["code"][0]
    again = httpx.post(f"{world.url}/auth/cli/token", json={"code": code, "verifier": "v" * 43})
    assert again.status_code == 400
    assert "already used" in again.json()["error"]


def test_cli_login_hears_the_refusal(world: World, config_home: Path) -> None:
    browser = world.browser()
    with pytest.raises(LoginFailed, match="reserved"):
        login_flow(world.url, lambda url: browser.drive(url, "sub-root"), timeout=30, hostname="x")
    assert credentials.load() is None


def test_the_code_needs_the_cli_verifier(world: World, config_home: Path) -> None:
    """A program that catches the loopback redirect still cannot get the token."""
    browser = world.browser()
    stolen: list[str] = []

    def intercept(url: str) -> None:
        port = parse_qs(urlsplit(url).query)["cli_port"][0]
        response = browser.drive(url, "frank", stop_at=f"http://127.0.0.1:{port}/callback")
        location = response.headers.get("location", "")
        stolen.append(parse_qs(urlsplit(location).query)["code"][0])
        httpx.get(location.replace("code=", "error=stolen&x="))  # let the CLI give up

    with pytest.raises(LoginFailed):
        login_flow(world.url, intercept, timeout=30, hostname="x")
    [code] = stolen
    refused = httpx.post(f"{world.url}/auth/cli/token", json={"code": code, "verifier": "w" * 43})
    assert refused.status_code == 400
    assert "verifier" in refused.json()["error"]
