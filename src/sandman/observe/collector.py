"""The collector: one pass over the GPUs and the active sessions every interval,
in a background thread, published as an immutable snapshot.

Readers (``/metrics``, the history, idle decisions) only ever read the latest
snapshot, so a slow driver or a busy engine delays the next measurement, never a
request.
"""

from __future__ import annotations

import threading

from sandman.observe.samples import MetricsSnapshot, SessionActivity

__all__ = ["MetricsCollector"]


class MetricsCollector:
    """Holds the latest snapshot; ``collect()`` takes a new one (see below)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: MetricsSnapshot | None = None

    def latest(self) -> MetricsSnapshot | None:
        with self._lock:
            return self._latest

    def activity(self, session_id: str) -> SessionActivity | None:
        snapshot = self.latest()
        return None if snapshot is None else snapshot.sessions.get(session_id)

    def publish(self, snapshot: MetricsSnapshot) -> None:
        """Make ``snapshot`` the one readers see."""
        with self._lock:
            self._latest = snapshot
