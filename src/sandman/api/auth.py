"""Who is calling: the bootstrap admin token, a personal token, or a browser login.

A bearer token is checked first; without one, the login cookie, and a change sent
with the cookie must also carry its CSRF token in ``X-CSRF-Token`` (a cross-site
form cannot read it). The caller is kept on the request for the audit trail.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from sandman.accounts.policy import BOOTSTRAP, Action, Caller, require
from sandman.accounts.tokens import TOKEN_PREFIX, same_secret
from sandman.errors import Forbidden, Unauthorized

if TYPE_CHECKING:
    from sandman.core import Sandman

LOGIN_COOKIE = "sandman_session"
CSRF_COOKIE = "sandman_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _core(request: Request) -> Sandman:
    state: Any = request.app.state
    core: Sandman = state.sandman
    return core


def is_bootstrap(core: Sandman, token: str) -> bool:
    return hmac.compare_digest(token.encode(), core.admin_token.encode())


async def authenticate(request: Request) -> Caller:
    """FastAPI dependency: the caller, or 401 saying what is missing.

    ``async``: the bootstrap token needs no I/O, and a personal token's one read
    runs on a worker thread.
    """
    core = _core(request)
    token = bearer_token(request)
    if token is not None:
        if is_bootstrap(core, token):
            caller = BOOTSTRAP
        elif token.startswith(TOKEN_PREFIX):
            caller = await run_in_threadpool(core.credentials.check_token, token)
        else:
            raise Unauthorized("wrong token: use a personal token (sm_...) or the admin token")
    else:
        cookie = request.cookies.get(LOGIN_COOKIE)
        if not cookie:
            raise Unauthorized(
                "missing credentials: send 'Authorization: Bearer <token>' or log in at /auth/login"
            )
        caller, csrf = await run_in_threadpool(core.credentials.check_login, cookie)
        request.state.csrf_token = csrf
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not sent or not same_secret(sent, csrf):
                request.state.caller = caller
                raise Forbidden(
                    f"a change made with the login cookie needs the {CSRF_HEADER} header "
                    "(csrf_token in GET /api/v1/me, or the sandman_csrf cookie)"
                )
    request.state.caller = caller
    return caller


Who = Annotated[Caller, Depends(authenticate)]


def is_admin(request: Request) -> bool:
    """Whether the request carries the bootstrap admin token (no I/O, for ``/healthz``)."""
    token = bearer_token(request)
    return token is not None and is_bootstrap(_core(request), token)


def allow(action: Action) -> Any:
    """A route dependency: the caller may do ``action`` (on nothing in particular)."""

    async def check(caller: Who) -> Caller:
        require(caller, action)
        return caller

    return Depends(check)
