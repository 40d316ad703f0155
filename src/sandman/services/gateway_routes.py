"""Sandman's database as the gateway's ``RouteSource``: which keys a user may log in
with, where their running session is, and the audit log of connections."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta

import asyncssh
from sqlalchemy import delete, select

from sandman.domain import ACTIVE_STATUSES, USER_ID_PATTERN, SessionStatus
from sandman.gateway.routing import ConnectionRecord, Route
from sandman.services.certificates import UserCA
from sandman.services.passwords import verify_password
from sandman.services.sessions import SessionService
from sandman.store.models import Connection, User
from sandman.store.models import Session as SessionRow


def describe_gpu(row: SessionRow, simulated: bool) -> str:
    """The session's GPU in words, for the login banner."""
    suffix = " (simulated)" if simulated and row.gpu_uuid else ""
    if row.mig_profile:
        return f"MIG {row.mig_profile} on {row.gpu_name}{suffix}"
    if row.gpu_share is not None:
        return f"{row.gpu_share:g} of a shared {row.gpu_name}{suffix}"
    if row.gpu_uuid:
        count = len(row.gpu_uuid.split(","))
        return f"{count}x whole {row.gpu_name}{suffix}"
    return "no GPU"


class DatabaseRouteSource:
    """``RouteSource`` backed by the sessions and users tables."""

    def __init__(
        self,
        sessions: SessionService,
        ca: UserCA | None = None,
        gateway_key: asyncssh.SSHKey | None = None,
    ) -> None:
        self.sessions = sessions
        self.ca = ca  # with the gateway's public key: routes carry certificates
        self.gateway_key = gateway_key
        # Told of each accepted login once (the audit trail); refusals stay in the
        # pruned connection log, so a flood cannot grow the trail.
        self.on_login: Callable[[ConnectionRecord], None] | None = None
        # More login banner lines for a session (idle reclaim's rule and warning).
        self.notice: Callable[[str], str] | None = None

    def authorized_keys(self, user_id: str) -> list[str]:
        if not USER_ID_PATTERN.fullmatch(user_id):
            return []
        with self.sessions.db.read() as db:
            user = db.get(User, user_id)
            # Keys given with a session authorize only while it is active, so
            # ending the session (or a failed one) revokes them; stored keys
            # (PUT /users/{id}/keys) stay.
            latest = db.scalars(
                select(SessionRow)
                .where(SessionRow.user_id == user_id, SessionRow.status.in_(ACTIVE_STATUSES))
                .order_by(SessionRow.created_at.desc())
                .limit(1)
            ).first()
            keys = list(user.ssh_public_keys) if user else []
            if latest is not None:
                keys += [k for k in latest.authorized_keys if k not in keys]
            return keys

    def route(self, user_id: str) -> Route | None:
        if not USER_ID_PATTERN.fullmatch(user_id):
            return None
        with self.sessions.db.read() as db:
            row = db.scalars(
                select(SessionRow).where(
                    SessionRow.user_id == user_id, SessionRow.status == SessionStatus.RUNNING
                )
            ).first()
        if row is None or row.host_public_key is None or not row.endpoint_host:
            return None
        if row.expires_at <= self.sessions.clock():
            return None  # its TTL has run out; the reaper ends it at its next sweep
        return Route(
            session_id=row.id,
            user_id=row.user_id,
            host=row.endpoint_host,
            port=row.endpoint_port or 0,
            host_public_key=row.host_public_key,
            gpu=describe_gpu(row, self.sessions.inventory.simulated),
            expires_at=row.expires_at,
            certificates=self._certificates(row),
            notice=self.notice(row.id) if self.notice is not None else "",
        )

    def _certificates(self, row: SessionRow) -> tuple[str, ...]:
        """The gateway's certificates for this user, valid until the session ends."""
        if self.ca is None or self.gateway_key is None:
            return ()
        return tuple(
            self.ca.certificates(
                self.gateway_key, row.user_id, row.expires_at, key_id=f"sandman-gateway:{row.id}"
            )
        )

    def record_connection(self, record: ConnectionRecord) -> None:
        if record.result == "refused":
            self._count_refusal(record)
            return
        with self.sessions.db.transaction() as db:
            row = db.get(Connection, record.connection_id)
            first = row is None
            if row is None:
                row = Connection(id=record.connection_id)
                db.add(row)
            row.user_id = record.user_id[:64]
            row.session_id = record.session_id
            row.client_address = record.client_address[:64]
            row.started_at = record.started_at
            row.ended_at = record.ended_at
            row.bytes_from_client = record.bytes_from_client
            row.bytes_to_client = record.bytes_to_client
            row.result = record.result
            row.reason = record.reason
        if first and self.on_login is not None:
            self.on_login(record)

    def _count_refusal(self, record: ConnectionRecord) -> None:
        """One row per address, reason and minute with a count, so a flood of bad
        logins cannot grow the database without bound."""
        minute = record.started_at.replace(second=0, microsecond=0)
        key = f"{record.client_address}|{record.reason}|{minute.isoformat()}"
        row_id = "refused-" + hashlib.sha256(key.encode()).hexdigest()[:28]
        with self.sessions.db.transaction() as db:
            row = db.get(Connection, row_id)
            if row is None:
                db.add(
                    Connection(
                        id=row_id,
                        user_id=record.user_id[:64],
                        session_id=None,
                        client_address=record.client_address[:64],
                        started_at=minute,
                        ended_at=record.ended_at,
                        bytes_from_client=record.bytes_from_client,
                        bytes_to_client=record.bytes_to_client,
                        result="refused",
                        reason=record.reason,
                        attempts=1,
                    )
                )
                return
            row.attempts += 1
            row.ended_at = record.ended_at
            row.bytes_from_client += record.bytes_from_client
            row.bytes_to_client += record.bytes_to_client
            if row.user_id != record.user_id[:64]:
                row.user_id = "(several)"

    def prune_connections(self, retention: timedelta) -> int:
        """Forget connection records older than ``retention``; returns how many."""
        cutoff = self.sessions.clock() - retention
        with self.sessions.db.transaction() as db:
            result = db.execute(delete(Connection).where(Connection.started_at < cutoff))
            return int(getattr(result, "rowcount", 0) or 0)

    def check_password(self, user_id: str, password: str) -> bool:
        if not self.sessions.settings.gateway_password_auth:
            return False
        if not USER_ID_PATTERN.fullmatch(user_id):
            return False
        with self.sessions.db.read() as db:
            user = db.get(User, user_id)
            stored = user.password_hash if user is not None else None
        return verify_password(password, stored)

    def touch(self, session_id: str) -> None:
        self.sessions.touch(session_id)
