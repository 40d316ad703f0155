"""The read side of sessions: one snapshot per call, never SQLite's write lock."""

from __future__ import annotations

from sqlalchemy import Select, func, or_, select

from sandman.accounts.policy import Visibility
from sandman.domain import ACTIVE_STATUSES, CURRENT_STATUSES, SessionStatus, validate_user_id
from sandman.errors import InvalidRequest, NotFound
from sandman.gpu.types import Claim
from sandman.services.gpu_claims import claims_from_rows
from sandman.store.database import Database
from sandman.store.models import GpuClaim
from sandman.store.models import Session as SessionRow

ACTIVE = [s.value for s in ACTIVE_STATUSES]
CURRENT = [s.value for s in CURRENT_STATUSES]  # the active ones and queued requests


class SessionReads:
    db: Database

    def get(self, session_id: str) -> SessionRow:
        with self.db.read() as db:
            row = db.get(SessionRow, session_id)
        if row is None:
            raise NotFound(f"no session {session_id!r}")
        return row

    def _query(
        self,
        status: str,
        user_id: str | None,
        visible: Visibility | None = None,
        queued: bool = False,
    ) -> Select[SessionRow]:
        """``status`` "active": the sessions holding resources, and with ``queued`` the
        queued requests too (as users count their sessions)."""
        query = select(SessionRow)
        if visible is not None and not visible.all:
            query = query.where(
                or_(SessionRow.user_id == visible.user_id, SessionRow.team.in_(visible.teams))
            )
        if status == "active":
            query = query.where(SessionRow.status.in_(CURRENT if queued else ACTIVE))
        elif status != "all":
            if status not in {s.value for s in SessionStatus}:
                raise InvalidRequest(
                    f"unknown status {status!r}: use active, all or one of "
                    + ", ".join(s.value for s in SessionStatus)
                )
            query = query.where(SessionRow.status == status)
        if user_id is not None:
            query = query.where(SessionRow.user_id == validate_user_id(user_id))
        return query

    def list_sessions(
        self, status: str = "active", user_id: str | None = None, queued: bool = False
    ) -> list[SessionRow]:
        return self.page(status, user_id, queued=queued)[0]

    def page(
        self,
        status: str = "active",
        user_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        visible: Visibility | None = None,
        queued: bool = False,
    ) -> tuple[list[SessionRow], int]:
        """Sessions ordered by ``created_at`` then ``id``, and how many match in all;
        ``visible`` keeps those a caller may see."""
        query = self._query(status, user_id, visible, queued)
        ordered = query.order_by(SessionRow.created_at, SessionRow.id).offset(offset)
        if limit is not None:
            ordered = ordered.limit(limit)
        with self.db.read() as db:
            rows = list(db.scalars(ordered))
            if limit is None and offset == 0:
                return rows, len(rows)
            total = db.scalar(select(func.count()).select_from(query.subquery())) or 0
        return rows, total

    def active_ids(self) -> set[str]:
        """The ids of the active sessions (no rows loaded: the reconciler asks every pass)."""
        with self.db.read() as db:
            return set(db.scalars(select(SessionRow.id).where(SessionRow.status.in_(ACTIVE))))

    def claims(self) -> list[Claim]:
        with self.db.read() as db:
            return claims_from_rows(list(db.scalars(select(GpuClaim))))

    def claimed_by(self) -> dict[str, str]:
        """Instance or GPU UUID -> session id (or admin operation), for inventory listings."""
        owners: dict[str, str] = {}
        with self.db.read() as db:
            for row in db.scalars(select(GpuClaim)):
                owners[row.instance_uuid or row.gpu_uuid] = row.session_id or row.held_by or ""
        return owners

    def counts_by_status(self) -> dict[str, int]:
        with self.db.read() as db:
            rows = db.execute(select(SessionRow.status, func.count()).group_by(SessionRow.status))
            return {status: count for status, count in rows}
