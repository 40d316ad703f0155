"""Shared dependencies of the routes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Request

if TYPE_CHECKING:
    from sandman.core import Sandman


def sandman(request: Request) -> Sandman:
    app_state: Any = request.app.state
    found: Sandman = app_state.sandman
    return found
