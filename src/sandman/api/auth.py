"""Bearer-token authentication of the admin API."""

from __future__ import annotations

import hmac

from fastapi import Request

from sandman.errors import Unauthorized


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def is_admin(request: Request) -> bool:
    expected: str = request.app.state.sandman.admin_token
    token = bearer_token(request)
    return token is not None and hmac.compare_digest(token.encode(), expected.encode())


async def require_admin(request: Request) -> None:
    """FastAPI dependency: the ``Authorization: Bearer <token>`` header must match.

    ``async`` because it does no I/O: it runs on the event loop instead of taking a
    worker thread for every request.
    """
    if bearer_token(request) is None:
        raise Unauthorized("missing admin token: send 'Authorization: Bearer <token>'")
    if not is_admin(request):
        raise Unauthorized("wrong admin token")
