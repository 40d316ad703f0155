"""Shared dependencies of the routes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Request

if TYPE_CHECKING:
    from sandman.core import Sandman


async def sandman(request: Request) -> Sandman:
    """The composition root (``async``: no I/O, so no worker thread per request)."""
    app_state: Any = request.app.state
    found: Sandman = app_state.sandman
    return found
