"""Targeted fixes to asyncssh's channel code for the gateway's relaying.

Applied explicitly by :meth:`GatewayServer.start`, and only when asyncssh is
exactly :data:`PINNED_VERSION` *and* the patched function's source is the one
the fix was written against: otherwise this module logs a warning and leaves
asyncssh stock. ``tests/unit/gateway/test_gateway_tuning.py`` fails loudly
when asyncssh changes underneath.

The fix (the only one carried so far):

* **Window re-opening after ``resume_reading()``.** Stock
  ``SSHChannel._deliver_data`` tops the receive window back up to its full
  size as soon as it drops below half, without counting data that arrived
  while reading was paused and still waits in ``_recv_buf``. A relay that
  pauses and resumes often (every time the other leg's buffer fills) thus
  grants the sender a fresh window on top of what is already buffered, and
  memory grows without bound on fast senders. The patched version only
  re-grants what has actually been delivered.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from typing import Any

import asyncssh
from asyncssh.channel import SSHChannel
from asyncssh.constants import MSG_CHANNEL_WINDOW_ADJUST
from asyncssh.packet import UInt32

log = logging.getLogger(__name__)

PINNED_VERSION = "2.24.1"
# sha256 of inspect.getsource(SSHChannel._deliver_data) in the pinned version
DELIVER_DATA_SHA256 = "bd94ccbaa59ab51048f695e4830ba02d0bb9af4cc44dfeb19a63a7afde35e74b"

_original_deliver_data: Any = None


def source_digest(func: Any) -> str:
    return hashlib.sha256(inspect.getsource(func).encode()).hexdigest()


def is_supported() -> bool:
    """Whether the installed asyncssh is exactly what these fixes target."""
    if asyncssh.__version__ != PINNED_VERSION:
        return False
    func = _original_deliver_data or SSHChannel._deliver_data
    return source_digest(func) == DELIVER_DATA_SHA256


def is_applied() -> bool:
    return _original_deliver_data is not None


def _deliver_data(self: Any, data: bytes, datatype: int | None) -> None:
    """``SSHChannel._deliver_data`` that does not re-grant still-buffered bytes."""
    init = self._init_recv_window
    buffered = sum(len(d) for d, _ in self._recv_buf) if self._recv_buf else 0
    window = self._recv_window + buffered
    if window < init / 2:
        adjust = init - window
        self.send_packet(MSG_CHANNEL_WINDOW_ADJUST, UInt32(adjust))
        self._recv_window += adjust
    if self._encoding:
        try:
            decoded = self._decoder.decode(data)
        except UnicodeDecodeError as exc:
            raise asyncssh.ProtocolError(str(exc)) from None
    else:
        decoded = data
    if self._session is not None:
        self._session.data_received(decoded, datatype)


def apply() -> bool:
    """Install the fixes once; return whether asyncssh is now tuned."""
    global _original_deliver_data
    if is_applied():
        return True
    if not is_supported():
        log.warning(
            "asyncssh %s is not the pinned %s (or its channel code differs); "
            "relaying with stock asyncssh",
            asyncssh.__version__,
            PINNED_VERSION,
        )
        return False
    _original_deliver_data = SSHChannel._deliver_data
    SSHChannel._deliver_data = _deliver_data  # type: ignore[method-assign]
    log.info("asyncssh %s tuned for relaying", PINNED_VERSION)
    return True


def revert() -> None:
    """Put stock asyncssh back (for tests)."""
    global _original_deliver_data
    if _original_deliver_data is not None:
        SSHChannel._deliver_data = _original_deliver_data  # type: ignore[method-assign]
        _original_deliver_data = None
