"""The apps origin's pure parts: the access decision, settings, the apps key, the
headers the proxy sends and returns, the launcher's answers, kernel states."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sandman.accounts.policy import (
    BOOTSTRAP,
    Action,
    Caller,
    Role,
    Scope,
    Target,
    decide,
    may_use_apps,
)
from sandman.config import Settings
from sandman.environments.apps import JUPYTERLAB, VSCODE, app_auth_headers, load_apps_key
from sandman.errors import ConfigurationError
from sandman.web.apps_control import Touches, kernels_busy, start_refusal
from sandman.web.apps_proxy import (
    Client,
    Upstream,
    close_code,
    has_body,
    request_headers,
    response_headers,
    without_cookies,
)

ALICE = Caller("alice", Role.USER)
ADMIN = Caller("carol", Role.ADMIN)
OPERATOR = Caller("olga", Role.OPERATOR)
LEAD = Caller("lee", Role.USER, teams={"ml": "lead"})
ALICES = Target(owner="alice", team="ml")


@pytest.mark.parametrize(
    ("caller", "admins_allowed", "allowed"),
    [
        (ALICE, False, True),
        (Caller("alice", Role.USER, scopes=frozenset({Scope.READ})), False, False),
        (Caller("bob", Role.USER), True, False),
        (LEAD, True, False),  # a team's lead may end it, not run code in it
        (OPERATOR, True, False),
        (ADMIN, False, False),
        (ADMIN, True, True),
        (BOOTSTRAP, False, False),
        (BOOTSTRAP, True, True),
        (Caller("carol", Role.ADMIN, scopes=frozenset({Scope.READ})), True, False),
    ],
)
def test_who_may_use_a_sessions_apps(caller: Caller, admins_allowed: bool, allowed: bool) -> None:
    assert may_use_apps(caller, ALICES, admins_allowed).allowed is allowed


def test_apps_are_their_owners_whatever_the_role() -> None:
    assert not decide(ADMIN, Action.APP_USE, ALICES).allowed
    assert decide(Caller("alice", Role.ADMIN), Action.APP_USE, ALICES).allowed


def test_the_apps_url_is_another_host_name_by_default() -> None:
    assert Settings().effective_apps_url == "http://localhost:8081"
    assert Settings(apps_listen="10.0.0.5:9000").effective_apps_url == "http://10.0.0.5:9000"
    assert Settings(apps_url="https://apps.example.org/").effective_apps_url == (
        "https://apps.example.org"
    )
    off = Settings(apps_listen="off")
    assert off.apps_listen_address is None and off.effective_apps_url is None


@pytest.mark.parametrize(
    "values", [{"apps_listen": "8081"}, {"apps_url": "https://apps.example.org/lab"}]
)
def test_apps_settings_that_cannot_work_are_refused(values: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        Settings(**values).check()


def test_the_apps_key_is_made_once_and_private(tmp_path: Path) -> None:
    key = load_apps_key(tmp_path)
    assert len(key) == 32 and load_apps_key(tmp_path) == key
    assert stat.S_IMODE(os.stat(tmp_path / "apps_key").st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["apps_key"]


def test_jupyterlab_takes_the_secret_as_its_token() -> None:
    assert app_auth_headers(JUPYTERLAB, "s3") == {"Authorization": "token s3"}


UPSTREAM = Upstream("10.88.0.2", 8888, {"Authorization": "token s"})
CLIENT = Client("192.0.2.1", "https://apps.example.org")


def test_request_headers() -> None:
    sent = request_headers(
        [
            ("Host", "apps.example.org"),
            ("Authorization", "Bearer sm_x"),
            ("Cookie", "sandman_apps=a; _xsrf=b;  sandman_csrf=c"),
            ("Origin", "https://apps.example.org"),
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "hop"),
            ("X-Forwarded-For", "spoofed"),
            ("Accept", "*/*"),
        ],
        UPSTREAM,
        CLIENT,
    )
    assert sent == [
        ("Origin", "http://10.88.0.2:8888"),
        ("Accept", "*/*"),
        ("Authorization", "token s"),
        ("cookie", "_xsrf=b"),
        ("x-forwarded-for", "192.0.2.1"),
        ("x-forwarded-proto", "https"),
    ]


def test_a_cookie_of_the_apps_auth_is_merged() -> None:
    upstream = Upstream("10.88.0.2", 8889, {"Cookie": "code-server-session=k"})
    sent = request_headers([("Cookie", "a=1")], upstream, CLIENT)
    assert ("cookie", "a=1; code-server-session=k") in sent


def test_response_headers() -> None:
    back = response_headers(
        [
            ("Location", "http://10.88.0.2:8888/s/x/lab/tree"),
            ("Set-Cookie", "_xsrf=1; Path=/"),
            ("Set-Cookie", "sandman_apps=evil; Path=/"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Type", "text/html"),
        ],
        UPSTREAM,
        CLIENT,
    )
    assert back == [
        ("Location", "https://apps.example.org/s/x/lab/tree"),
        ("Set-Cookie", "_xsrf=1; Path=/"),
        ("Content-Type", "text/html"),
    ]


def test_small_helpers() -> None:
    assert without_cookies("a=1; sandman_apps=2;b=3", frozenset({"sandman_apps"})) == "a=1; b=3"
    assert not has_body([("Content-Length", "0")]) and has_body([("Content-Length", "5")])
    assert has_body([("Transfer-Encoding", "chunked")]) and not has_body([])
    assert [close_code(c) for c in (None, 1000, 1005, 1006, 4001, 1015)] == [
        1000,
        1000,
        1000,
        1011,
        4001,
        1011,
    ]


def test_what_the_launcher_answers() -> None:
    assert start_refusal(JUPYTERLAB, 0, "") is None
    assert "offers no web apps" in (start_refusal(JUPYTERLAB, 127, "not found") or "")
    assert "did not start within" in (start_refusal(JUPYTERLAB, None, "") or "")
    refused = start_refusal(VSCODE, 2, "a\nb\nvscode is not installed in this environment\n")
    assert (refused or "").startswith("this session's environment does not offer VS Code")
    failed = start_refusal(VSCODE, 1, "vscode exited before it answered") or ""
    assert failed.startswith("VS Code did not start") and "exited" in failed


def test_kernel_states() -> None:
    assert kernels_busy([{"execution_state": "idle"}, {"execution_state": "busy"}])
    assert not kernels_busy([{"execution_state": "idle"}])
    assert not kernels_busy({"message": "forbidden"})


def test_touches_are_rate_limited() -> None:
    now = [0.0]
    touches = Touches(30, clock=lambda: now[0])
    assert touches.due("s") and not touches.due("s") and touches.due("t")
    now[0] = 29.9
    assert not touches.due("s")
    now[0] = 30.0
    assert touches.due("s")


def test_vs_code_gets_its_secret_as_code_servers_cookie_and_no_base_path() -> None:
    import hashlib

    auth = app_auth_headers(VSCODE, "s3")
    assert auth == {"Cookie": f"code-server-session={hashlib.sha256(b's3').hexdigest()}"}
    upstream = Upstream("10.88.0.2", 8889, auth, strip="/s/x/code")
    sent = request_headers([("Cookie", "code-server-session=forged; a=1")], upstream, CLIENT)
    assert ("cookie", f"a=1; {auth['Cookie']}") in sent
    back = dict(
        response_headers([("Location", "/login?to=%2F")], upstream, CLIENT)
        + response_headers([("Set-Cookie", "x=1")], upstream, CLIENT)
    )
    assert back["Location"] == "/s/x/code/login?to=%2F"


def test_the_upstream_read_size_is_raised() -> None:
    """Loud if httpcore renames what the proxy tunes (``UPSTREAM_READ``)."""
    import httpcore

    from sandman.web.apps_proxy import UPSTREAM_READ, AppsProxy

    assert isinstance(httpcore.AsyncHTTP11Connection.READ_NUM_BYTES, int)
    AppsProxy()
    assert httpcore.AsyncHTTP11Connection.READ_NUM_BYTES >= UPSTREAM_READ
