"""Bearer-token authentication of the admin API."""

from __future__ import annotations

import hmac

from fastapi import Request

from sandman.errors import Unauthorized


async def require_admin(request: Request) -> None:
    """FastAPI dependency: the ``Authorization: Bearer <token>`` header must match.

    ``async`` because it does no I/O: it runs on the event loop instead of taking a
    worker thread for every request.
    """
    expected: str = request.app.state.sandman.admin_token
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing admin token: send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Unauthorized("wrong admin token")
