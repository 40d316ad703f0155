"""The apps proxy's data path: HTTP and WebSockets to an app in a session container.

Bodies stream both ways (``httpx`` to the app, Starlette to the browser), so a
large upload or download never sits whole in Sandman's memory; WebSocket frames
are relayed one by one in both directions (the ``websockets`` client upstream),
close codes included.

What the app sees (the choices, for the README): the request as if the browser
had opened the app at its own address, the way ``ssh -L`` reaches it:

- **Host** is the app's address (``<container ip>:<port>``), and **Origin**, when
  the browser sent the apps origin's own, is the app's address too. JupyterLab
  and code-server both check that Origin matches Host (code-server prefers
  ``X-Forwarded-Host``, so none is sent). A foreign Origin is passed on as it came,
  and the app's own check refuses it.
- The path is unchanged (``/s/{id}/lab/...``): each app is told its base path.
- The browser's ``Authorization`` and Sandman's cookies are removed; the app's
  secret is added (``app_auth_headers``). ``X-Forwarded-For`` and
  ``X-Forwarded-Proto`` say who asked and how.
- Answers come back as they are, less hop-by-hop headers and any ``Set-Cookie``
  naming Sandman's cookies; a ``Location`` at the app's address points back at
  the apps origin.
- code-server is served at its root (its links are relative): for it the proxy
  removes the base path going in and puts it back on redirects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import httpcore
import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

log = logging.getLogger(__name__)

# RFC 9110 7.6.1: meaningful for one connection only; never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Set by the proxy, never taken from the browser.
PROXY_SET = frozenset(
    {"host", "authorization", "forwarded", "x-forwarded-for", "x-forwarded-host"}
    | {"x-forwarded-proto", "x-forwarded-port", "x-real-ip"}
)
# What the WebSocket client builds itself from its own handshake.
WEBSOCKET_OWN = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"}
    | {"sec-websocket-protocol", "sec-websocket-accept", "origin", "user-agent"}
)
# Sandman's own cookies: the apps origin's login and, should a deployment share a
# host name, the portal's. No app ever sees them.
SANDMAN_COOKIES = frozenset({"sandman_apps", "sandman_session", "sandman_csrf"})
CONNECT_TIMEOUT = 10.0
# httpcore reads an HTTP/1.1 answer 64 KiB at a time, and every read costs a parse
# and a send on; 1 MiB reads halve the proxy's CPU per GiB relayed. A class
# attribute of httpcore's (the unit tests fail loudly if it goes away); it only
# bounds one read, so every other async HTTP client of the process is unharmed.
UPSTREAM_READ = 1 << 20


class UpstreamUnreachable(Exception):
    """The app does not accept connections (not started, or gone)."""


@dataclass(frozen=True)
class Upstream:
    """Where one app of one session answers, and what proves the proxy may ask."""

    host: str
    port: int
    auth: dict[str, str]  # the headers carrying the app's secret
    strip: str | None = None  # a base path the app does not see (``/s/{id}/code``)

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
class Client:
    """What the proxy says about the browser: its address and the apps origin."""

    address: str | None
    apps_origin: str  # scheme://host[:port], as browsers send it in Origin

    @property
    def proto(self) -> str:
        return self.apps_origin.partition("://")[0]


# ---------------------------------------------------------------- pure helpers
def connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    """Header names listed in ``Connection``: hop-by-hop for this message too."""
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named.update(token.strip().lower() for token in value.split(",") if token.strip())
    return named


def without_cookies(value: str, names: frozenset[str]) -> str:
    """A ``Cookie`` header less the named cookies (the rest kept byte for byte)."""
    kept = []
    for part in value.split(";"):
        name = part.split("=", 1)[0].strip()
        if name and name not in names:
            kept.append(part.strip())
    return "; ".join(kept)


def request_headers(
    headers: Sequence[tuple[str, str]],
    upstream: Upstream,
    client: Client,
    drop: frozenset[str] = frozenset(),
) -> list[tuple[str, str]]:
    """The headers the app gets for a browser's request (see the module's doc)."""
    skip = HOP_BY_HOP | PROXY_SET | connection_tokens(headers) | drop
    out: list[tuple[str, str]] = []
    cookies: list[str] = []
    ours = SANDMAN_COOKIES | {  # the app's own secret cookie comes from the proxy alone
        part.split("=", 1)[0].strip()
        for name, value in upstream.auth.items()
        if name.lower() == "cookie"
        for part in value.split(";")
    }
    for name, value in headers:
        lower = name.lower()
        if lower in skip:
            continue
        if lower == "cookie":
            kept = without_cookies(value, ours)
            if kept:
                cookies.append(kept)
            continue
        if lower == "origin" and value.rstrip("/").lower() == client.apps_origin.lower():
            value = upstream.origin
        out.append((name, value))
    for name, value in upstream.auth.items():
        if name.lower() == "cookie":
            cookies.append(value)
        else:
            out.append((name, value))
    if cookies:
        out.append(("cookie", "; ".join(cookies)))
    if client.address:
        out.append(("x-forwarded-for", client.address))
    out.append(("x-forwarded-proto", client.proto))
    return out


def response_headers(
    headers: Sequence[tuple[str, str]], upstream: Upstream, client: Client
) -> list[tuple[str, str]]:
    """The headers the browser gets back from the app (see the module's doc)."""
    skip = HOP_BY_HOP | connection_tokens(headers)
    out: list[tuple[str, str]] = []
    for name, value in headers:
        lower = name.lower()
        if lower in skip:
            continue
        if lower == "set-cookie" and _names_sandman_cookie(value):
            continue
        if lower == "location":
            value = location(value, upstream, client)
        out.append((name, value))
    return out


def location(value: str, upstream: Upstream, client: Client) -> str:
    """A redirect as the browser must follow it: on the apps origin, under the base
    path the proxy removed, if it removed one."""
    prefix = upstream.strip or ""
    if value.startswith(upstream.origin):
        return client.apps_origin + prefix + value[len(upstream.origin) :]
    if prefix and value.startswith("/") and not value.startswith("//"):
        return prefix + value
    return value


def _names_sandman_cookie(set_cookie: str) -> bool:
    parsed: SimpleCookie = SimpleCookie()
    try:
        parsed.load(set_cookie)
    except Exception:
        return set_cookie.split("=", 1)[0].strip() in SANDMAN_COOKIES
    return any(name in SANDMAN_COOKIES for name in parsed) or (
        set_cookie.split("=", 1)[0].strip() in SANDMAN_COOKIES
    )


def has_body(headers: Iterable[tuple[str, str]]) -> bool:
    """Whether a request says it carries a body (GETs usually do not: none is sent)."""
    for name, value in headers:
        lower = name.lower()
        if lower == "transfer-encoding" or (lower == "content-length" and value.strip() != "0"):
            return True
    return False


def close_code(code: int | None) -> int:
    """A close code that may be sent on: 1005 (none given) and 1006 (the connection
    dropped) are only ever reported, never sent."""
    if code is None or code == 1005:
        return 1000
    if code == 1006 or not (1000 <= code < 5000) or code in (1004, 1015):
        return 1011
    return code


def subprotocols(headers: Iterable[tuple[str, str]]) -> list[Subprotocol]:
    found: list[Subprotocol] = []
    for name, value in headers:
        if name.lower() == "sec-websocket-protocol":
            found.extend(Subprotocol(p.strip()) for p in value.split(",") if p.strip())
    return found


# ------------------------------------------------------------------- the I/O
def _decoded(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]


def _target(scope: MutableMapping[str, Any], upstream: Upstream, scheme: str) -> str:
    raw = scope.get("raw_path") or scope["path"].encode()
    path = raw.decode("latin-1")
    if upstream.strip and path.startswith(upstream.strip):
        path = path[len(upstream.strip) :] or "/"
    query = scope.get("query_string", b"").decode("latin-1")
    base = upstream.origin.replace("http", scheme, 1)
    return f"{base}{path}?{query}" if query else f"{base}{path}"


class AppsProxy:
    """Relays requests to apps; one pooled HTTP client for every session's apps."""

    def __init__(self, http: httpx.AsyncClient | None = None) -> None:
        if httpcore.AsyncHTTP11Connection.READ_NUM_BYTES < UPSTREAM_READ:
            httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = UPSTREAM_READ
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(connect=CONNECT_TIMEOUT, read=None, write=None, pool=None),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
            follow_redirects=False,
            trust_env=False,  # never through an HTTP proxy of the environment
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def http_request(self, request: Request, upstream: Upstream, client: Client) -> Response:
        """Relay one HTTP request; the body streams both ways."""
        headers = _decoded(request.scope["headers"])
        body = request.stream() if has_body(headers) else None
        outgoing = self.http.build_request(
            request.method,
            _target(request.scope, upstream, "http"),
            headers=request_headers(headers, upstream, client),
            content=body,
        )
        try:
            answer = await self.http.send(outgoing, stream=True)
        except httpx.ConnectError as exc:
            raise UpstreamUnreachable(str(exc)) from exc
        response = StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            background=BackgroundTask(answer.aclose),
        )
        response.raw_headers = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in response_headers(answer.headers.multi_items(), upstream, client)
        ]
        return response

    async def websocket(self, browser: WebSocket, upstream: Upstream, client: Client) -> None:
        """Relay one WebSocket: connect to the app first (so the browser is refused
        as the app refuses it), then frames both ways until either side closes."""
        headers = _decoded(browser.scope["headers"])
        extra = request_headers(headers, upstream, client, drop=WEBSOCKET_OWN)
        origin = dict((k.lower(), v) for k, v in headers).get("origin")
        if origin is not None and origin.rstrip("/").lower() == client.apps_origin.lower():
            origin = upstream.origin
        user_agent = next((v for k, v in headers if k.lower() == "user-agent"), None)
        if user_agent is not None:
            extra.append(("user-agent", user_agent))
        try:
            app = await connect(
                _target(browser.scope, upstream, "ws"),
                origin=origin,  # type: ignore[arg-type]
                subprotocols=subprotocols(headers) or None,
                additional_headers=extra,
                user_agent_header=None,
                compression=None,  # no inflating and deflating in the middle
                proxy=None,
                open_timeout=CONNECT_TIMEOUT,
                ping_interval=None,  # the browser's and the app's own keep-alives pass
                max_size=None,
                max_queue=64,
            )
        except InvalidStatus as exc:
            await deny(browser, exc.response.status_code, "the app refused the WebSocket")
            return
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise UpstreamUnreachable(str(exc)) from exc
        try:
            await browser.accept(subprotocol=app.subprotocol)
            await relay(browser, app)
        finally:
            await app.close()


async def deny(browser: WebSocket, status: int, message: str) -> None:
    """Refuse a WebSocket handshake with an HTTP answer where the server can send
    one, else with close code 1008 (policy violation)."""
    if "websocket.http.response" in browser.scope.get("extensions", {}):
        await browser.send_denial_response(Response(message, status_code=status))
    else:
        await browser.close(1008, message[:120])


async def relay(browser: WebSocket, app: ClientConnection) -> None:
    """Frames both ways; whichever side closes first, its code goes to the other."""

    async def browser_to_app() -> None:
        while True:
            message = await browser.receive()
            if message["type"] == "websocket.disconnect":
                await app.close(close_code(message.get("code")), message.get("reason") or "")
                return
            if message.get("bytes") is not None:
                await app.send(message["bytes"])
            elif message.get("text") is not None:
                await app.send(message["text"])

    async def app_to_browser() -> None:
        try:
            async for frame in app:
                if isinstance(frame, bytes):
                    await browser.send_bytes(frame)
                else:
                    await browser.send_text(frame)
        except ConnectionClosed:
            pass
        code = close_code(app.close_code if app.close_code is not None else 1006)
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await browser.close(code, app.close_reason or "")

    tasks = [asyncio.create_task(browser_to_app()), asyncio.create_task(app_to_browser())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            failure = None if task.cancelled() else task.exception()
            if failure is not None and not isinstance(
                failure, WebSocketDisconnect | ConnectionClosed
            ):
                log.warning("a relayed WebSocket failed: %r", failure)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
