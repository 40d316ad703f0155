"""``/auth``: logging in through the OpenID provider, for browsers and ``sandman login``.

Not under ``/api/v1`` and not in the OpenAPI document: these are the steps of a
browser's login, not API calls (the README describes them). Refusals are the
usual JSON errors.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from sandman.accounts.audit import Entry
from sandman.accounts.oidc import check_cli, check_next
from sandman.accounts.sso import FLOW_TTL, SingleSignOn
from sandman.accounts.tokens import same_secret
from sandman.api.auth import CSRF_COOKIE, CSRF_HEADER, LOGIN_COOKIE
from sandman.api.routes.deps import sandman
from sandman.core import Sandman
from sandman.errors import Forbidden, NotFound, SandmanError, Unauthorized

router = APIRouter(prefix="/auth", include_in_schema=False)
App = Annotated[Sandman, Depends(sandman)]
FLOW_COOKIE = "sandman_oidc"
CALLBACK = "/auth/callback"  # the flow cookie goes nowhere else


def _sso(app: Sandman) -> SingleSignOn:
    if app.sso is None:
        raise NotFound(
            "single sign-on is not configured (SANDMAN_OIDC_ISSUER); use a personal token"
        )
    return app.sso


def _source(request: Request) -> str | None:
    return request.client.host if request.client else None


def _secure(app: Sandman) -> bool:
    return app.sso.secure_cookies if app.sso is not None else False


@router.get("/login")
async def login(
    app: App,
    next: Annotated[str | None, Query(max_length=2048)] = None,
    cli_port: int | None = None,
    cli_state: Annotated[str | None, Query(max_length=128)] = None,
    cli_challenge: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Send the browser to the provider; ``next`` is where it lands afterwards (a path
    here), ``cli_*`` hand the result to ``sandman login`` instead."""
    sso = _sso(app)
    url, sealed = await sso.begin(next, check_cli(cli_port, cli_state, cli_challenge))
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        FLOW_COOKIE,
        sealed,
        max_age=FLOW_TTL,
        path=CALLBACK,
        secure=sso.secure_cookies,
        httponly=True,
        samesite="lax",
    )
    return response


@router.get("/callback")
async def callback(
    request: Request,
    app: App,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
    error_description: Annotated[str | None, Query(max_length=1024)] = None,
) -> Response:
    """Where the provider sends the browser back: the login is finished here."""
    sso = _sso(app)
    flow = sso.open_flow(request.cookies.get(FLOW_COOKIE), state)
    request_id = getattr(request.state, "request_id", None)
    try:
        done = await sso.finish(flow, code, error, error_description, _source(request), request_id)
    except SandmanError as exc:
        if flow.cli is None:
            raise
        # The CLI is waiting on its loopback listener: tell it why, there.
        response: Response = RedirectResponse(flow.cli.redirect(error=exc.message), 303)
        response.delete_cookie(FLOW_COOKIE, path=CALLBACK)
        return response
    response = RedirectResponse(done.redirect, status_code=303)
    response.delete_cookie(FLOW_COOKIE, path=CALLBACK)
    if done.login is not None:
        max_age = int((done.login.expires_at - datetime.now(UTC)).total_seconds())
        response.set_cookie(
            LOGIN_COOKIE,
            done.login.secret,
            max_age=max_age,
            path="/",
            secure=sso.secure_cookies,
            httponly=True,
            samesite="lax",
        )
        response.set_cookie(
            CSRF_COOKIE,
            done.login.csrf_token,
            max_age=max_age,
            path="/",
            secure=sso.secure_cookies,
            httponly=False,  # the page's script reads it into X-CSRF-Token
            samesite="lax",
        )
    return response


async def _form(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        body = (await request.body())[:16384].decode("utf-8", "replace")
        return {key: values[0] for key, values in parse_qs(body).items()}
    return {}


@router.post("/logout")
async def logout(request: Request, app: App) -> Response:
    """End the browser's login. POST only, with the CSRF token (``X-CSRF-Token``, or
    a ``csrf_token`` form field), so another site cannot log a person out; an
    expired or missing login just clears the cookies. ``next`` (a path here), as a
    form field or query, answers with a redirect there instead of JSON."""
    form = await _form(request)
    next_path = form.get("next") or request.query_params.get("next")
    secret = request.cookies.get(LOGIN_COOKIE)
    ended = None
    if secret:
        try:
            caller, csrf = await run_in_threadpool(app.credentials.check_login, secret)
        except Unauthorized:
            caller = None
        if caller is not None:
            sent = request.headers.get(CSRF_HEADER) or form.get("csrf_token") or ""
            if not sent or not same_secret(sent, csrf):
                raise Forbidden(
                    f"logging out needs the {CSRF_HEADER} header or a csrf_token form field "
                    "(the sandman_csrf cookie's value)"
                )
            await run_in_threadpool(app.credentials.end_login, secret)
            if caller.user_id is not None:  # the apps origin's logins end with it
                await run_in_threadpool(app.apps.end_logins, caller.user_id)
            ended = caller.actor
            await run_in_threadpool(
                app.audit.record,
                Entry(
                    actor=caller.actor,
                    action="auth.logout",
                    target=caller.actor,
                    source=_source(request),
                    request_id=getattr(request.state, "request_id", None),
                    detail={"via": "cookie"},
                ),
            )
    response: Response
    if next_path:
        response = RedirectResponse(check_next(next_path), status_code=303)
    else:
        message = f"{ended} logged out" if ended else "no login to end"
        response = JSONResponse({"message": message})
    for name in (LOGIN_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path="/", secure=_secure(app), samesite="lax")
    return response


class CliTokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=1, max_length=128)
    verifier: str = Field(min_length=43, max_length=128)
    hostname: str = Field("unknown", max_length=255)


@router.post("/cli/token")
async def cli_token(body: CliTokenBody, request: Request, app: App) -> dict[str, Any]:
    """``sandman login``'s last step: the one-time code and the verifier for a
    personal token (30 days, all of the user's scopes, named ``cli@<host>``)."""
    sso = _sso(app)
    issued = await run_in_threadpool(
        sso.exchange, body.code, body.verifier, body.hostname, _source(request)
    )
    view = issued.view
    return {
        "token": issued.secret,
        "token_id": view.id,
        "name": view.name,
        "user_id": view.user_id,
        "expires_at": view.expires_at.isoformat() if view.expires_at else None,
    }
