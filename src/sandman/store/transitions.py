"""Compare-and-set on rows: the one way a session's status changes, and leases.

Every status change is a single ``UPDATE ... WHERE id = :id AND status IN (...)``
(optionally ``AND version = :seen``) that bumps ``version``. The database
applies it atomically on SQLite and PostgreSQL alike, so of any number of
concurrent callers exactly one sees ``True`` and owns what follows (a
teardown, a start), whichever process it runs in.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as Db

from sandman.store.models import Lease
from sandman.store.models import Session as SessionRow


def transition(
    db: Db,
    session_id: str,
    from_statuses: Iterable[str],
    to_status: str | None = None,
    *,
    seen_version: int | None = None,
    owner: str | None = None,
    owners: Iterable[str | None] | None = None,
    **values: Any,
) -> bool:
    """Set ``values`` (and ``to_status``) only if the row is still as the caller saw it.

    ``owner`` requires ``worker_id`` to equal it; ``owners`` to be one of them
    (``None`` matching a row that has none).
    """
    statement = update(SessionRow).where(
        SessionRow.id == session_id, SessionRow.status.in_(list(from_statuses))
    )
    if seen_version is not None:
        statement = statement.where(SessionRow.version == seen_version)
    if owner is not None:
        statement = statement.where(SessionRow.worker_id == owner)
    if owners is not None:
        named = [o for o in owners if o is not None]
        clauses = [SessionRow.worker_id.in_(named)] if named else []
        if None in owners:
            clauses.append(SessionRow.worker_id.is_(None))
        statement = statement.where(or_(*clauses))
    if to_status is not None:
        values["status"] = to_status
    values["version"] = SessionRow.version + 1
    result: CursorResult[Any] = db.execute(  # type: ignore[assignment]
        statement.values(**values).execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def acquire_lease(db: Db, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Take or renew the lease ``name`` for ``holder``; False while another holds it."""
    lease = db.scalars(select(Lease).where(Lease.name == name).with_for_update()).first()
    if lease is None:
        try:
            with db.begin_nested():
                db.add(Lease(name=name, holder=holder, expires_at=now + ttl))
        except IntegrityError:
            return False  # another process created it first
        return True
    if lease.holder != holder and lease.expires_at > now:
        return False
    lease.holder = holder
    lease.expires_at = now + ttl
    return True
