"""The apps origin end to end over a fake runtime and a fake app: who gets through,
the handshake, HTTP and WebSockets relayed, streaming without buffering, start
on demand and activity."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from tests.unit.web.conftest import Stack, Upstream, build_stack
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from sandman.environments.apps import JUPYTERLAB
from sandman.runtime.base import ExecResult
from sandman.web.apps_access import COOKIE

GIB = 1 << 30
MIB = 1 << 20


def open_url(stack: Stack, user: str = "alice", app: str = "jupyterlab") -> httpx.Response:
    return stack.api.post(
        f"/api/v1/sessions/{stack.session_id}/apps/{app}/open", headers=stack.bearer(user)
    )


def handshake(stack: Stack, client: httpx.Client) -> httpx.Response:
    opened = open_url(stack)
    assert opened.status_code == 200, opened.text
    return client.get(opened.json()["url"])


# ------------------------------------------------------------------ who gets in
def test_no_credentials_is_401(stack: Stack) -> None:
    answer = httpx.get(stack.lab("ping"))
    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthenticated"
    assert answer.headers["www-authenticate"] == "Bearer"


def test_another_user_and_an_unknown_id_are_both_404(stack: Stack) -> None:
    other = httpx.get(stack.lab("ping"), headers=stack.bearer("bob"))
    unknown = httpx.get(stack.lab("ping", "no-such-session"), headers=stack.bearer("bob"))
    assert other.status_code == unknown.status_code == 404
    assert other.json()["code"] == unknown.json()["code"] == "not_found"
    assert open_url(stack, "bob").status_code == 404


def test_the_owner_with_a_bearer_token_reaches_the_app(stack: Stack) -> None:
    answer = httpx.get(stack.lab("ping"), headers=stack.bearer("alice"))
    assert answer.status_code == 200, answer.text
    assert answer.text == "pong"  # the fake checked the session's secret


def test_admins_only_where_the_setting_allows(tmp_path: Path, upstream: Upstream) -> None:
    for allowed in (False, True):
        stacks = build_stack(tmp_path / str(allowed), upstream, apps_admin_access=allowed)
        stack = next(stacks)
        answer = httpx.get(stack.lab("ping"), headers=stack.bearer("carol"))
        assert answer.status_code == (200 if allowed else 404)
        bootstrap = httpx.get(stack.lab("ping"), headers={"Authorization": "Bearer unit-token"})
        assert bootstrap.status_code == (200 if allowed else 404)
        stacks.close()


def test_a_wrong_token_is_401(stack: Stack) -> None:
    assert httpx.get(stack.lab("ping"), headers={"Authorization": "Bearer x"}).status_code == 401
    garbage = {"cookie": f"{COOKIE}=not-a-login"}
    assert httpx.get(stack.lab("ping"), headers=garbage).status_code == 401


# ------------------------------------------------------------------ handshake
def test_the_handshake_sets_the_origins_cookie_and_redirects(stack: Stack) -> None:
    with httpx.Client() as client:
        answer = handshake(stack, client)
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/s/{stack.session_id}/lab/"
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "path", "max-age", "samesite"} <= attributes
        assert "domain" not in attributes and "secure" not in attributes  # host-only, http
        assert "samesite=lax" in cookie.lower()
        assert answer.headers["cache-control"] == "no-store"
        page = client.get(stack.lab("ping"))
        assert page.status_code == 200 and page.text == "pong"


def test_a_code_works_once(stack: Stack) -> None:
    url = open_url(stack).json()["url"]
    assert httpx.get(url).status_code == 303
    again = httpx.get(url)
    assert again.status_code == 401
    assert "already used" in again.json()["error"]


def test_an_expired_code_is_refused(stack: Stack) -> None:
    url = open_url(stack).json()["url"]
    now = stack.core.apps.clock()
    stack.core.apps.clock = lambda: now + timedelta(seconds=61)
    answer = httpx.get(url, headers={"accept": "text/html"})
    assert answer.status_code == 401 and "expired" in answer.text
    assert "set-cookie" not in answer.headers


def test_the_portal_answers_with_a_link_on_the_apps_origin(stack: Stack) -> None:
    body = open_url(stack).json()
    assert body["url"].startswith(f"{stack.url}/_open?code=")
    assert body["expires_in"] == 60 and body["path"] == f"/s/{stack.session_id}/lab/"
    assert open_url(stack, app="emacs").status_code == 404


def test_the_cookie_is_secure_on_an_https_origin(tmp_path: Path, upstream: Upstream) -> None:
    stacks = build_stack(tmp_path, upstream)
    stack = next(stacks)
    stack.origin.apps_url = "https://apps.example.org"
    answer = httpx.get(open_url(stack).json()["url"])
    assert "secure" in answer.headers["set-cookie"].lower()
    stacks.close()


# ------------------------------------------------------------------ the relay
def test_what_the_app_is_sent_and_what_comes_back(stack: Stack) -> None:
    headers = {
        **stack.bearer("alice"),
        "cookie": f"{COOKIE}=x; _xsrf=abc; sandman_session=portal",
        "origin": stack.url,
        "x-forwarded-host": "evil.example.org",
    }
    answer = httpx.get(stack.lab("headers"), headers=headers)
    assert answer.status_code == 200, answer.text
    sent = {k.lower(): v for k, v in answer.json()["headers"]}
    upstream_origin = f"http://{sent['host']}"
    assert sent["host"].startswith("127.0.0.1:")
    assert sent["origin"] == upstream_origin  # as if the browser were at the app
    assert sent["authorization"].startswith("token ")  # the app's secret, not the bearer
    assert sent["cookie"] == "_xsrf=abc"  # Sandman's cookies never reach the app
    assert "x-forwarded-host" not in sent and sent["x-forwarded-proto"] == "http"
    assert answer.json()["path"] == f"/s/{stack.session_id}/lab/headers"
    cookies = answer.headers.get_list("set-cookie")
    assert any(c.startswith("_xsrf=") for c in cookies)
    assert not any(c.startswith(f"{COOKIE}=") for c in cookies)


def test_a_foreign_origin_goes_on_as_it_came(stack: Stack) -> None:
    headers = {**stack.bearer("alice"), "origin": "https://evil.example.org"}
    sent = dict(httpx.get(stack.lab("headers"), headers=headers).json()["headers"])
    assert sent["origin"] == "https://evil.example.org"


def test_a_redirect_to_the_apps_own_address_comes_back_to_the_origin(stack: Stack) -> None:
    answer = httpx.get(stack.lab("redirect"), headers=stack.bearer("alice"))
    assert answer.status_code == 302
    assert answer.headers["location"] == f"{stack.url}/s/{stack.session_id}/lab/ping"


def test_the_base_path_without_its_slash_redirects(stack: Stack) -> None:
    answer = httpx.get(f"{stack.url}/s/{stack.session_id}/lab")
    assert answer.status_code == 308
    assert answer.headers["location"] == f"/s/{stack.session_id}/lab/"


def test_websocket_echo_both_ways_and_close_codes(stack: Stack) -> None:
    url = stack.lab("ws").replace("http://", "ws://")
    with connect(
        url,
        additional_headers=stack.bearer("alice"),
        subprotocols=["v1.kernel.websocket.jupyter.org"],  # type: ignore[list-item]
        origin=stack.url,  # type: ignore[arg-type]
    ) as ws:
        assert ws.subprotocol == "v1.kernel.websocket.jupyter.org"
        ws.send("hello")
        assert ws.recv() == "hello"
        ws.send(b"\x00\x01" * 40000)
        assert ws.recv() == b"\x00\x01" * 40000
        ws.send("origin")
        assert ws.recv().startswith("http://127.0.0.1:")  # rewritten to the app's own
        ws.send("close:4001")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    assert stack.session_id in stack.touched


def test_websocket_refusals(stack: Stack) -> None:
    url = stack.lab("ws").replace("http://", "ws://")
    with pytest.raises(InvalidStatus) as none:
        connect(url).close()
    assert none.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as other:
        connect(url, additional_headers=stack.bearer("bob")).close()
    assert other.value.response.status_code == 404


# ------------------------------------------------------------------ streaming
def rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


class PeakRss:
    """The process's resident memory, sampled while a transfer runs."""

    def __init__(self) -> None:
        self.base = rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.base


def test_a_1_gib_download_streams_through(stack: Stack) -> None:
    received = 0
    with (
        PeakRss() as memory,
        httpx.stream(
            "GET", stack.lab(f"bytes?size={GIB}"), headers=stack.bearer("alice"), timeout=60
        ) as answer,
    ):
        assert answer.status_code == 200
        assert answer.headers["content-length"] == str(GIB)
        for chunk in answer.iter_raw():
            received += len(chunk)
    assert received == GIB
    assert memory.growth < 150 * MIB, f"the proxy grew by {memory.growth / MIB:.0f} MiB"


def test_a_large_upload_streams_through(stack: Stack) -> None:
    size = 512 * MIB
    block = bytes(range(256)) * (MIB // 256)
    expected = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for _ in range(size // MIB):
            expected.update(block)
            yield block

    with PeakRss() as memory:
        answer = httpx.post(
            stack.lab("upload"),
            content=body(),
            headers={**stack.bearer("alice"), "content-length": str(size)},
            timeout=60,
        )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"bytes": size, "sha256": expected.hexdigest()}
    assert memory.growth < 150 * MIB, f"the proxy grew by {memory.growth / MIB:.0f} MiB"


# ------------------------------------------------------------------ start on demand
def test_the_app_starts_once_as_the_user(stack: Stack) -> None:
    for _ in range(3):
        assert httpx.get(stack.lab("ping"), headers=stack.bearer("alice")).status_code == 200
    starts = [entry for entry in stack.runtime.exec_log if entry[1][1:3] == ["start", "jupyterlab"]]
    assert len(starts) == 1
    assert starts[0][1][3:] == ["--session", stack.session_id, "--origin", stack.url]
    with stack.core.db.read() as db:
        from sandman.store.models import User

        alice = db.get(User, "alice")
        assert alice is not None
        assert starts[0][2] == f"{alice.uid}:{alice.gid}"


def test_an_app_the_environment_lacks_is_503_with_the_reason(stack: Stack) -> None:
    stack.runtime.launcher = ExecResult(127, "sandman-apps: not found")
    answer = httpx.get(stack.lab("ping"), headers=stack.bearer("alice"))
    assert answer.status_code == 503
    assert answer.json()["code"] == "app_unavailable"
    assert "offers no web apps" in answer.json()["error"]
    stack.runtime.launcher = ExecResult(2, "jupyterlab is not offered by environment base")
    answer = httpx.get(stack.lab("ping"), headers=stack.bearer("alice"))
    assert answer.status_code == 503 and "not offered" in answer.json()["error"]


def test_a_session_that_is_not_running_is_503(stack: Stack) -> None:
    stack.core.apps.session_cache_s = 0
    stack.api.delete(f"/api/v1/sessions/{stack.session_id}", headers=stack.bearer("alice"))
    answer = httpx.get(stack.lab("ping"), headers=stack.bearer("alice"))
    assert answer.status_code == 503 and "not running" in answer.json()["error"]


# ------------------------------------------------------------------ activity
def test_traffic_touches_the_session_at_most_every_30s(stack: Stack) -> None:
    for _ in range(5):
        httpx.get(stack.lab("ping"), headers=stack.bearer("alice"))
    time.sleep(0.2)
    assert stack.touched == [stack.session_id]


def test_a_busy_kernel_touches_its_session(stack: Stack) -> None:
    assert httpx.get(stack.lab("ping"), headers=stack.bearer("alice")).is_success
    control = stack.origin.control
    assert (stack.session_id, JUPYTERLAB.name) in control.started

    async def look() -> None:
        async with httpx.AsyncClient() as client:
            await control.watch_kernels(client, stack.origin.auth, stack.origin.still_running)

    time.sleep(0.2)
    stack.touched.clear()
    asyncio.run(look())
    assert stack.touched == []  # idle kernels are no activity
    httpx.post(stack.lab("api/kernels"), headers=stack.bearer("alice"))  # one turns busy
    asyncio.run(look())
    assert stack.touched == [stack.session_id]
    httpx.post(stack.lab("api/kernels"), headers=stack.bearer("alice"))  # idle again
