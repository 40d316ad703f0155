"""The reaper ends sessions whose TTL has run out.

The decision is a pure function of (sessions, clock); the sweep around it is
bounded and one failure never stops it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from sandman.domain import SessionStatus
from sandman.errors import SandmanError
from sandman.services.sessions import SessionService
from sandman.store.models import Session as SessionRow

log = logging.getLogger(__name__)


def expired(sessions: Iterable[SessionRow], now: datetime) -> list[SessionRow]:
    """Running (or stuck starting) sessions whose ``expires_at`` has passed."""
    return [
        s
        for s in sessions
        if s.status in (SessionStatus.RUNNING, SessionStatus.STARTING) and s.expires_at <= now
    ]


class Reaper:
    def __init__(self, sessions: SessionService) -> None:
        self.sessions = sessions

    def sweep(self) -> list[str]:
        """End every expired session; returns the ids ended."""
        ended: list[str] = []
        for row in expired(self.sessions.list_sessions("active"), self.sessions.clock()):
            if self.sessions.is_busy(row.id):
                continue  # still being created or ended by this process
            reason = f"TTL of {row.ttl_minutes} min expired at {row.expires_at.isoformat()}"
            try:
                final = self.sessions.end(row.id, SessionStatus.EXPIRED, reason)
                if final.status == SessionStatus.EXPIRED and final.end_reason == reason:
                    ended.append(row.id)  # this sweep ended it, not a racing DELETE
            except SandmanError as exc:
                log.error("reaper could not end session %s: %s", row.id, exc.message)
            except Exception:
                log.exception("reaper could not end session %s", row.id)
        return ended
