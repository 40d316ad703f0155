"""The accounts epoch: a counter bumped in the same transaction as every change
that can narrow what a credential may do (a token revoked, a user disabled or
given another role, a membership changed, a login ended).

A process may cache what a credential stands for as long as the epoch has not
moved: one tiny read per request instead of three, and a revocation still takes
effect at once, in every process sharing the database.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session as Db

from sandman.store.database import Database
from sandman.store.models import Meta

KEY = "auth_epoch"
EPOCH_QUERY = select(Meta.value).where(Meta.key == KEY)


def bump(db: Db) -> None:
    """Move the epoch, inside the caller's transaction."""
    row = db.scalar(select(Meta).where(Meta.key == KEY).with_for_update())
    if row is None:
        db.add(Meta(key=KEY, value="1"))
    else:
        row.value = str(int(row.value) + 1)


def current(database: Database) -> str:
    return database.read_scalar(EPOCH_QUERY) or "0"
