"""cost_ledger: GPU grant start/end events to the second, their day rollup
(seconds per UTC day and grant key) and capacity snapshots; existing sessions are
back-filled from started_at/created_at and ended_at

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# Statuses that hold nothing (and never will again): their grant has ended.
ACTIVE_OR_QUEUED = ("starting", "running", "stopping", "queued")
GRANT_COLUMNS = (
    "user_id", "team", "project", "gpu_name", "mig_profile", "gpu_share", "gpus", "priority",
)  # fmt: skip


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    stamp: datetime = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return stamp.astimezone(UTC).replace(microsecond=0)


def _day_rows(grant: dict[str, Any], start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The ended grant's seconds per UTC day, keyed as ``accounting.service`` keys them."""
    held = {name: grant[name] for name in GRANT_COLUMNS}
    text = json.dumps(list(held.values()), separators=(",", ":"))
    key = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    rows: list[dict[str, Any]] = []
    cursor = start
    while cursor < end:
        day: date = cursor.date()
        following = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        seconds = round((min(following, end) - cursor).total_seconds())
        if seconds > 0:
            week, month = day - timedelta(days=day.weekday()), day.replace(day=1)
            rows.append({**held, "day": day, "key": key, "week": week, "month": month,
                         "seconds": seconds})  # fmt: skip
        cursor = following
    return rows


def _backfill(events: sa.Table, days: sa.Table) -> None:
    """A start for every session that held GPUs, and an end and its days for every
    ended one."""
    sessions = sa.table(
        "sessions",
        *(
            sa.column(name)
            for name in (
                "id", "user_id", "status", "team", "project", "gpu_name", "mig_profile",
                "gpu_share", "gpu_parent_uuid", "gpu_uuid", "priority", "created_at",
                "started_at", "ended_at",
            )
        ),
    )  # fmt: skip
    held = sa.func.coalesce(sessions.c.gpu_parent_uuid, sessions.c.gpu_uuid)
    query = sa.select(sessions).where(held.is_not(None), held != "")
    rows: list[dict[str, Any]] = []
    summed: dict[tuple[date, str], dict[str, Any]] = {}
    for session in op.get_bind().execute(query).mappings():
        start = _aware(session["started_at"]) or _aware(session["created_at"])
        if start is None:
            continue
        grant = {
            "session_id": session["id"],
            "user_id": session["user_id"],
            "team": session["team"],
            "project": session["project"],
            "gpu_name": session["gpu_name"],
            "mig_profile": session["mig_profile"],
            "gpu_share": session["gpu_share"],
            "gpus": len((session["gpu_parent_uuid"] or session["gpu_uuid"]).split(",")),
            "priority": session["priority"] or "normal",
        }
        rows.append({**grant, "kind": "start", "at": start})
        if session["status"] not in ACTIVE_OR_QUEUED:
            end = max(start, _aware(session["ended_at"]) or start)
            rows.append({**grant, "kind": "end", "at": end})
            for day in _day_rows(grant, start, end):
                found = summed.setdefault((day["day"], day["key"]), {**day, "seconds": 0})
                found["seconds"] += day["seconds"]
    if rows:
        op.bulk_insert(events, rows)
    if summed:
        op.bulk_insert(days, list(summed.values()))


def upgrade() -> None:
    events = op.create_table(
        "ledger_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("team", sa.String(length=64), nullable=True),
        sa.Column("project", sa.String(length=64), nullable=True),
        sa.Column("gpu_name", sa.String(length=96), nullable=True),
        sa.Column("mig_profile", sa.String(length=32), nullable=True),
        sa.Column("gpu_share", sa.Float(), nullable=True),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("priority", sa.String(length=8), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "uq_ledger_events_session_kind", "ledger_events", ["session_id", "kind"], unique=True
    )
    op.create_index("ix_ledger_events_kind_at", "ledger_events", ["kind", "at"])
    op.create_table(
        "ledger_capacity",
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("gpus", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("at"),
    )
    days = op.create_table(
        "ledger_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("week", sa.Date(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("team", sa.String(length=64), nullable=True),
        sa.Column("project", sa.String(length=64), nullable=True),
        sa.Column("gpu_name", sa.String(length=96), nullable=True),
        sa.Column("mig_profile", sa.String(length=32), nullable=True),
        sa.Column("gpu_share", sa.Float(), nullable=True),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("priority", sa.String(length=8), nullable=False),
        sa.Column("seconds", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "key"),
    )
    _backfill(events, days)


def downgrade() -> None:
    op.drop_table("ledger_days")
    op.drop_table("ledger_capacity")
    op.drop_index("ix_ledger_events_kind_at", table_name="ledger_events")
    op.drop_index("uq_ledger_events_session_kind", table_name="ledger_events")
    op.drop_table("ledger_events")
