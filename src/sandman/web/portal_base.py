"""The portal's plumbing: who is looking (the login cookie), CSRF on every form, the
security headers on every page, templates, and the one-shot flash message.

Every portal route is a ``PortalRoute``: a refusal (a domain error) becomes an
HTML page with the error's status instead of the API's JSON, a missing login a
redirect to ``/ui/login``, and every answer carries the content security policy.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.concurrency import run_in_threadpool

from sandman.accounts.policy import Caller
from sandman.accounts.tokens import same_secret
from sandman.api.auth import CSRF_COOKIE, CSRF_HEADER, LOGIN_COOKIE, SAFE_METHODS
from sandman.errors import ERROR_CODES, Forbidden, SandmanError, Unauthorized
from sandman.web.portal_views import NavItem, navigation

if TYPE_CHECKING:
    from sandman.core import Sandman

PREFIX = "/ui"
FLASH_COOKIE = "sandman_flash"
LOGIN_FORM_COOKIE = "sandman_login_form"  # the login form's own CSRF secret (no login yet)
MAX_FORM = 65536
TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(__file__).with_name("static")


def csp(apps_url: str | None) -> str:
    """No inline script, nothing from elsewhere; forms post here (and the apps
    handshake redirects to the apps origin, which ``form-action`` must allow)."""
    forms = "'self'" + (f" {apps_url}" if apps_url else "")
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'; font-src 'self'; form-action {forms}; frame-ancestors 'none'; "
        "base-uri 'none'; object-src 'none'"
    )


def security_headers(core: Sandman) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp(core.settings.effective_apps_url),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def _filters() -> dict[str, Callable[..., Any]]:
    def when(value: datetime | None) -> str:
        if value is None:
            return "—"
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")

    def iso(value: datetime | None) -> str:
        if value is None:
            return ""
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")

    def duration(seconds: float | None) -> str:
        if seconds is None:
            return "—"
        s = int(seconds)
        if s >= 86400:
            return f"{s // 86400}d {s % 86400 // 3600}h"
        if s >= 3600:
            return f"{s // 3600}h {s % 3600 // 60:02d}m"
        return f"{s // 60}m {s % 60:02d}s"

    def num(value: float | None, digits: int = 0) -> str:
        return "—" if value is None else f"{value:,.{digits}f}"

    return {"when": when, "iso": iso, "duration": duration, "num": num}


JINJA = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    auto_reload=False,
    trim_blocks=True,
    lstrip_blocks=True,
)
JINJA.filters.update(_filters())


class LoginRequired(Exception):
    """No (valid) login cookie: the browser goes to the login page."""


@dataclass(frozen=True)
class Viewer:
    caller: Caller
    csrf: str
    nav: list[NavItem]

    @property
    def user_id(self) -> str:
        # A login cookie always belongs to a user (the bootstrap token cannot log in).
        return self.caller.user_id or ""


def core_of(request: Request) -> Sandman:
    state: Any = request.app.state
    core: Sandman = state.sandman
    return core


async def form_of(request: Request) -> dict[str, str]:
    """The urlencoded form of a POST (read once, kept on the request)."""
    cached = getattr(request.state, "portal_form", None)
    if cached is not None:
        found: dict[str, str] = cached
        return found
    form: dict[str, str] = {}
    kind = request.headers.get("content-type", "")
    if kind.startswith("application/x-www-form-urlencoded"):
        body = (await request.body())[:MAX_FORM].decode("utf-8", "replace")
        form = {key: values[0] for key, values in parse_qs(body).items()}
    request.state.portal_form = form
    return form


async def viewer(request: Request) -> Viewer:
    """The logged-in person; a change also needs the login's CSRF token in the form
    (``csrf_token``) or in ``X-CSRF-Token`` (htmx), like the API's cookie callers."""
    core = core_of(request)
    secret = request.cookies.get(LOGIN_COOKIE)
    if not secret:
        raise LoginRequired
    try:
        caller, csrf = await run_in_threadpool(core.credentials.check_login, secret)
    except Unauthorized as exc:
        raise LoginRequired from exc
    request.state.caller = caller  # the audit trail's actor
    if request.method not in SAFE_METHODS:
        form = await form_of(request)
        sent = request.headers.get(CSRF_HEADER) or form.get("csrf_token", "")
        if not sent or not same_secret(sent, csrf):
            raise Forbidden("the form's CSRF token is missing or wrong: reload the page")
        request.state.audit_detail = {"via": "portal"}
    return Viewer(caller, csrf, navigation(caller))


Seen = Annotated[Viewer, Depends(viewer)]


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    status_code: int = 200,
    viewer: Viewer | None = None,
) -> HTMLResponse:
    core = core_of(request)
    flash = request.cookies.get(FLASH_COOKIE)
    values = {
        "viewer": viewer,
        "flash": _read_flash(flash),
        "path": request.url.path,
        "apps_url": core.settings.effective_apps_url,
        **context,
    }
    html = JINJA.get_template(template).render(values)
    response = HTMLResponse(html, status_code=status_code)
    if flash:
        response.delete_cookie(FLASH_COOKIE, path=PREFIX)
    return response


def _read_flash(value: str | None) -> dict[str, str] | None:
    if not value:
        return None
    kind, _, text = value.partition(":")
    from urllib.parse import unquote

    return {"kind": kind if kind in ("ok", "error") else "ok", "text": unquote(text)[:500]}


def secure_cookies(core: Sandman) -> bool:
    """Cookies are ``Secure`` whenever Sandman is reached over https."""
    return (core.settings.public_url or "").startswith("https://")


def redirect(
    request: Request, to: str, message: str | None = None, kind: str = "ok"
) -> RedirectResponse:
    """303 to ``to`` (a path here), with a one-shot message for the next page."""
    response = RedirectResponse(to, status_code=303)
    if message:
        response.set_cookie(
            FLASH_COOKIE,
            f"{kind}:{quote(message[:500])}",
            max_age=60,
            path=PREFIX,
            secure=secure_cookies(core_of(request)),
            httponly=True,
            samesite="strict",
        )
    return response


def set_login(response: Response, core: Sandman, secret: str, csrf: str, max_age: int) -> None:
    """The same two cookies a single sign-on login sets (``/auth/callback``)."""
    secure = secure_cookies(core) or (core.sso.secure_cookies if core.sso else False)
    response.set_cookie(
        LOGIN_COOKIE, secret, max_age=max_age, path="/", secure=secure, httponly=True,
        samesite="lax",
    )  # fmt: skip
    response.set_cookie(
        CSRF_COOKIE, csrf, max_age=max_age, path="/", secure=secure, httponly=False,
        samesite="lax",
    )  # fmt: skip


Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class PortalRoute(APIRoute):
    """A portal page: HTML errors, the login redirect and the security headers."""

    def get_route_handler(self) -> Endpoint:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            core = core_of(request)
            try:
                response = await handler(request)
            except LoginRequired:
                response = _to_login(request)
            except SandmanError as exc:
                response = render(
                    request,
                    "error.html",
                    {"message": exc.message, "status": ERROR_CODES.get(exc.code, 400)},
                    status_code=ERROR_CODES.get(exc.code, 400),
                )
            response.headers.update(security_headers(core))
            return response

        return handle


def _to_login(request: Request) -> Response:
    target = request.url.path
    if request.url.query and request.method == "GET":
        target += f"?{request.url.query}"
    if request.headers.get("hx-request"):
        # An htmx fragment's poll: the whole page goes to the login.
        return Response(status_code=401, headers={"HX-Redirect": f"{PREFIX}/login"})
    if request.method != "GET":
        target = f"{PREFIX}/"
    return RedirectResponse(f"{PREFIX}/login?next={quote(target, safe='/')}", status_code=303)
