"""The apps origin: a second ASGI app, on ``SANDMAN_APPS_URL``, that serves each
session's JupyterLab and VS Code under ``/s/{session_id}/{lab|code}/``.

``sandman serve`` runs it beside the API (``SANDMAN_APPS_LISTEN``). Its routes:

- ``GET /_open?code=...``: the portal's one-time code for the origin's own cookie
  (host-only, ``HttpOnly``, ``SameSite=Lax``, ``Secure`` on https), then a redirect
  to the app;
- ``/s/{session_id}/{app}/...``: the proxy (HTTP and WebSockets), for the cookie
  or a bearer token; no credentials is 401, another user's or an unknown session
  404, an app the session cannot run 503;
- ``GET /healthz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from sandman.environments.apps import (
    BY_PATH,
    VSCODE,
    App,
    app_auth_headers,
    apps_secret,
    base_path,
    load_apps_key,
)
from sandman.errors import NotFound, SandmanError
from sandman.web.apps_access import COOKIE, AppsAccess, AppsSession
from sandman.web.apps_control import KERNEL_POLL, AppsControl, AppUnavailable
from sandman.web.apps_proxy import AppsProxy, Client, Upstream, UpstreamUnreachable, deny

if TYPE_CHECKING:
    from sandman.core import Sandman

log = logging.getLogger(__name__)

# Apps served at their root behind a proxy that removes the base path (code-server,
# whose links are relative); the others are told their base path (JupyterLab).
STRIPPED = frozenset({VSCODE.name})
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
Address = Callable[[AppsSession, App], tuple[str, int]]


def container_address(session: AppsSession, app: App) -> tuple[str, int]:
    """Where an app answers: the container's address on the session network."""
    if session.address is None:
        raise AppUnavailable(f"session {session.id} has no address on the session network")
    return session.address, app.port


@dataclass
class AppsOrigin:
    """The parts the apps origin's routes use (each built and tested on its own)."""

    access: AppsAccess
    control: AppsControl
    proxy: AppsProxy
    key: bytes  # Sandman's apps key: each session's secret derives from it
    apps_url: str
    kernel_poll: float = KERNEL_POLL

    @property
    def secure(self) -> bool:
        return self.apps_url.startswith("https://")

    def auth(self, session_id: str, app: App) -> dict[str, str]:
        return app_auth_headers(app, apps_secret(self.key, session_id))

    def still_running(self, session_id: str) -> bool:
        session = self.access.session(session_id)
        return session is not None and session.running


def create_apps_app(core: Sandman, address: Address = container_address) -> Starlette:
    """The apps origin over one ``Sandman``; ``address`` finds an app's upstream (a
    seam: tests point it at a local fake app)."""
    settings = core.settings
    apps_url = settings.effective_apps_url or "http://localhost"
    origin = AppsOrigin(
        access=core.apps,
        control=AppsControl(core.runtime, core.idle.touch, address, apps_url),
        proxy=AppsProxy(),
        key=load_apps_key(settings.data_dir),
        apps_url=apps_url,
    )
    return build_apps_app(origin)


def build_apps_app(origin: AppsOrigin) -> Starlette:
    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        watcher = asyncio.create_task(watch_kernels(origin))
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await origin.proxy.close()

    async def open_app(request: Request) -> Response:
        code = request.query_params.get("code", "")
        try:
            opened = await run_in_threadpool(origin.access.exchange, code)
        except SandmanError as exc:
            return refusal(request, exc.status_code, exc.code, exc.message)
        response = RedirectResponse(base_path(opened.session_id, opened.app), status_code=303)
        max_age = int((opened.expires_at - origin.access.clock()).total_seconds())
        response.set_cookie(
            COOKIE,
            opened.secret,
            max_age=max(max_age, 0),
            path="/",
            secure=origin.secure,
            httponly=True,
            samesite="lax",
        )  # no Domain: host-only, this origin's alone
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"  # the code stays out of logs
        return response

    async def add_slash(request: Request) -> Response:
        if request.path_params["app"] not in BY_PATH:
            return refusal(request, 404, "not_found", "no such page")
        url = request.url.replace(path=request.url.path + "/")
        return RedirectResponse(str(url.path) + (f"?{url.query}" if url.query else ""), 308)

    async def proxy_http(request: Request) -> Response:
        try:
            session, app = await gate(origin, request)
            upstream = await upstream_of(origin, session, app)
            origin.control.seen(session.id)
            client = Client(request.client.host if request.client else None, origin.apps_url)
            try:
                return await origin.proxy.http_request(request, upstream, client)
            except UpstreamUnreachable:
                origin.control.forget(session.id, app)  # stopped or crashed: start it again
                upstream = await upstream_of(origin, session, app)
                return await origin.proxy.http_request(request, upstream, client)
        except SandmanError as exc:
            return refusal(request, exc.status_code, exc.code, exc.message)
        except (AppUnavailable, UpstreamUnreachable) as exc:
            return refusal(request, 503, "app_unavailable", str(exc))

    async def proxy_websocket(websocket: WebSocket) -> None:
        try:
            session, app = await gate(origin, websocket)
            upstream = await upstream_of(origin, session, app)
            origin.control.seen(session.id)
            client = Client(websocket.client.host if websocket.client else None, origin.apps_url)
            try:
                await origin.proxy.websocket(websocket, upstream, client)
            except UpstreamUnreachable:
                origin.control.forget(session.id, app)
                upstream = await upstream_of(origin, session, app)
                await origin.proxy.websocket(websocket, upstream, client)
            origin.control.seen(session.id)
        except SandmanError as exc:
            await deny(websocket, exc.status_code, exc.message)
        except (AppUnavailable, UpstreamUnreachable) as exc:
            await deny(websocket, 503, str(exc))

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def home(request: Request) -> Response:
        return refusal(
            request, 404, "not_found", "Sandman's apps origin: open an app from the portal"
        )

    prefix = "/s/{session_id}/{app}"
    app = Starlette(
        routes=[
            Route("/_open", open_app, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/", home, methods=["GET"]),
            Route(prefix, add_slash, methods=METHODS),
            Route(prefix + "/{rest:path}", proxy_http, methods=METHODS),
            WebSocketRoute(prefix + "/{rest:path}", proxy_websocket),
        ],
        lifespan=lifespan,
    )
    app.state.apps_origin = origin
    return app


async def gate(origin: AppsOrigin, connection: HTTPConnection) -> tuple[AppsSession, App]:
    """The caller may use this session's apps, and the app is one Sandman knows."""
    session_id = connection.path_params["session_id"]
    app = BY_PATH.get(connection.path_params["app"])
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" and token.strip() else None
    cookie = connection.cookies.get(COOKIE)

    def check() -> AppsSession:
        caller = origin.access.caller(bearer, cookie)
        return origin.access.authorize(caller, session_id)

    session = await run_in_threadpool(check)
    if app is None:
        raise NotFound(f"no app at {connection.url.path}")
    return session, app


async def upstream_of(origin: AppsOrigin, session: AppsSession, app: App) -> Upstream:
    host, port = await origin.control.ensure(session, app)
    strip = base_path(session.id, app)[:-1] if app.name in STRIPPED else None
    return Upstream(host, port, origin.auth(session.id, app), strip)


async def watch_kernels(origin: AppsOrigin) -> None:
    """Every ``kernel_poll``: busy JupyterLab kernels count as their session's activity."""
    while True:
        await asyncio.sleep(origin.kernel_poll)
        try:
            await origin.control.watch_kernels(origin.proxy.http, origin.auth, origin.still_running)
        except Exception:
            log.exception("looking at JupyterLab's kernels failed")


def refusal(request: HTTPConnection, status: int, code: str, message: str) -> Response:
    """An error of the apps origin: a short page for a browser, JSON for a script."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if "text/html" in request.headers.get("accept", ""):
        page = (
            "<!doctype html><meta charset=utf-8><title>Sandman</title>"
            f"<p>{html.escape(message)}</p>"
        )
        return Response(page, status, headers=headers, media_type="text/html")
    return JSONResponse({"error": message, "code": code}, status, headers=headers)
