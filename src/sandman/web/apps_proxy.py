"""The apps proxy's data path: HTTP and WebSockets to an app in a session container.

Bodies stream both ways (``httpx`` to the app, Starlette to the browser), so a
large upload or download never sits whole in Sandman's memory; WebSocket frames
are relayed one by one in both directions (the ``websockets`` client upstream),
close codes included. httpx reaches the apps over connections of the proxy's
own (``_Backend``): each receives into one buffer of its own, read by httpcore up
to 1 MiB at a time: a third less of the proxy's CPU per GiB relayed.

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
import ctypes
import logging
import os
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import httpcore
import httpx
from httpcore import AsyncNetworkBackend, AsyncNetworkStream
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
# Answers this small (by their Content-Length) are read whole, then sent in one go:
# streaming costs a task group and two tasks per answer, a fifth of a page's cost.
SMALL_ANSWER = 64 << 10
# httpcore reads an HTTP/1.1 answer 64 KiB at a time, and every read costs a parse
# and a send on; 1 MiB reads halve the proxy's CPU per GiB relayed. A class
# attribute of httpcore's (the unit tests fail loudly if it goes away); it only
# bounds one read, so every other async HTTP client of the process is unharmed.
UPSTREAM_READ = 1 << 20
# Each connection to an app receives into a buffer of its own, this large: asyncio's
# own streams receive at most 256 KiB into a new bytes object at a time, and every
# piece then costs a pass through httpcore, h11, Starlette and uvicorn. Reading
# what is there, up to 1 MiB, in one go quarters that. It bounds what one
# connection holds; when it fills, reading from the app pauses (backpressure).
UPSTREAM_BUFFER = 1 << 20
UPSTREAM_MIN_FREE = 64 << 10  # room below which the buffer is compacted, or reading paused
# Relaying, h11 and httpcore allocate and free a buffer of about UPSTREAM_READ per
# piece. glibc's malloc gives freed memory at the top of its heap back to the
# kernel beyond 2 MiB or so, then takes it back page by page on the next piece: a
# page fault per 4 KiB, 190,000 per GiB relayed (a third of the proxy's CPU).
# Keeping up to HEAP_KEEP free in the heap instead (and pieces up to HEAP_MMAP in
# it) costs that much resident memory at most, once.
HEAP_KEEP = 32 << 20
HEAP_MMAP = 4 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


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


def keep_heap() -> bool:
    """Tell glibc's malloc to keep freed memory for the next piece (see HEAP_KEEP);
    False where the C library is not glibc (nothing changed)."""
    try:
        os.confstr("CS_GNU_LIBC_VERSION")
        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # Both, or neither: setting either turns off glibc's own adjustment of the other.
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP) and mallopt(_M_TRIM_THRESHOLD, HEAP_KEEP))


class _Buffered(asyncio.BufferedProtocol):
    """One connection to an app: what arrives goes straight into one buffer (no
    object per piece); reading pauses while the buffer is full, writing waits while
    the kernel's is."""

    def __init__(self, size: int) -> None:
        self.buffer = bytearray(size)
        self.view = memoryview(self.buffer)
        self.start = self.end = 0  # the unread bytes are view[start:end]
        self.transport: asyncio.Transport | None = None
        self.closed = False  # end of stream, or the connection lost
        self.error: BaseException | None = None
        self.paused = False  # reading, for want of room
        self.blocked = False  # writing, until the kernel takes more
        self.readable: asyncio.Future[None] | None = None
        self.writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.start == self.end:
            self.start = self.end = 0
        elif len(self.buffer) - self.end < UPSTREAM_MIN_FREE and self.start:
            kept = self.end - self.start
            self.view[:kept] = self.view[self.start : self.end]  # memmove: may overlap
            self.start, self.end = 0, kept
        return self.view[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        if len(self.buffer) - (self.end - self.start) < UPSTREAM_MIN_FREE:
            self.paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake_reader()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        self._wake_reader()
        self.resume_writing()

    def pause_writing(self) -> None:
        self.blocked = True

    def resume_writing(self) -> None:
        self.blocked = False
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def _wake_reader(self) -> None:
        if self.readable is not None and not self.readable.done():
            self.readable.set_result(None)

    def take(self, most: int) -> memoryview:
        """Up to ``most`` buffered bytes (at least one: the caller waited), as a view
        valid until control returns to the loop: h11 copies what it is given into
        its own buffer at once, so the bytes are copied there and nowhere else."""
        stop = min(self.end, self.start + most)
        data = self.view[self.start : stop]
        self.start = stop
        if self.paused and len(self.buffer) - (self.end - self.start) >= UPSTREAM_MIN_FREE:
            self.paused = False
            assert self.transport is not None
            self.transport.resume_reading()
        return data


class _Stream(AsyncNetworkStream):
    """httpcore's view of one connection to an app (plain TCP: apps speak HTTP)."""

    def __init__(self, transport: asyncio.Transport, protocol: _Buffered) -> None:
        self.transport = transport
        self.protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self.protocol
        while protocol.start == protocol.end:
            if protocol.closed:
                if protocol.error is not None:
                    raise httpcore.ReadError(str(protocol.error))
                return b""
            protocol.readable = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await protocol.readable
            except TimeoutError as exc:
                raise httpcore.ReadTimeout("no answer from the app in time") from exc
            finally:
                protocol.readable = None
        return protocol.take(max_bytes)  # type: ignore[return-value]  # see take

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        protocol = self.protocol
        if protocol.closed or self.transport.is_closing():
            raise httpcore.WriteError(str(protocol.error or "the app closed the connection"))
        self.transport.write(buffer)
        while protocol.blocked and not protocol.closed:
            protocol.writable = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await protocol.writable
            except TimeoutError as exc:
                raise httpcore.WriteTimeout("the app took no more in time") from exc
            finally:
                protocol.writable = None
        if protocol.error is not None:
            raise httpcore.WriteError(str(protocol.error))

    async def aclose(self) -> None:
        self.transport.close()

    async def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> AsyncNetworkStream:
        raise httpcore.ConnectError("apps are reached over plain HTTP, never TLS")

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # an idle connection the app closed, or sent junk on
            return self.protocol.closed or self.protocol.start != self.protocol.end
        if info == "socket":
            return self.transport.get_extra_info("socket")
        if info == "client_addr":
            return self.transport.get_extra_info("sockname")
        if info == "server_addr":
            return self.transport.get_extra_info("peername")
        return None


class _Backend(AsyncNetworkBackend):
    """httpcore's connections to apps, on asyncio's transports with one buffer each."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    lambda: _Buffered(UPSTREAM_BUFFER),
                    host,
                    port,
                    local_addr=(local_address, 0) if local_address else None,
                )  # asyncio sets TCP_NODELAY
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"{host}:{port} did not answer in time") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        for option in socket_options or ():
            transport.get_extra_info("socket").setsockopt(*option)
        return _Stream(transport, protocol)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> AsyncNetworkStream:
        raise httpcore.ConnectError("apps are reached over TCP")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def apps_client() -> httpx.AsyncClient:
    """The proxy's HTTP client: pooled connections to apps, on ``_Backend``."""
    if httpcore.AsyncHTTP11Connection.READ_NUM_BYTES < UPSTREAM_READ:
        httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = UPSTREAM_READ
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    # httpx takes no network backend of its own; its transport's pool is httpcore's,
    # which does (the unit tests fail loudly if the attribute goes away).
    transport._pool = httpcore.AsyncConnectionPool(
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=_Backend(),
    )
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(connect=CONNECT_TIMEOUT, read=None, write=None, pool=None),
        follow_redirects=False,
        trust_env=False,  # never through an HTTP proxy of the environment
    )


def _small(method: str, answer: httpx.Response) -> bool:
    """Whether an answer's body is known to be at most SMALL_ANSWER (or none at all)."""
    if method == "HEAD" or answer.status_code in (204, 304):
        return True
    length = answer.headers.get("content-length", "")
    return (
        length.isdigit()
        and int(length) <= SMALL_ANSWER
        and "transfer-encoding" not in answer.headers
    )


class AppsProxy:
    """Relays requests to apps; one pooled HTTP client for every session's apps."""

    def __init__(self, http: httpx.AsyncClient | None = None) -> None:
        if http is None:
            keep_heap()
        self.http = http or apps_client()

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
        response: Response
        if _small(request.method, answer):  # read whole: no streaming task per answer
            try:
                content = b"".join([piece async for piece in answer.aiter_raw()])
            finally:
                await answer.aclose()
            response = Response(content, status_code=answer.status_code)
        else:
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
