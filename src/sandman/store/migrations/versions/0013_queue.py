"""the wait queue: a queued request's ask and reason, preemption's grace and
requester; a queued request counts as the user's one session

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

OLD = "status IN ('starting', 'running', 'stopping')"
NEW = "status IN ('starting', 'running', 'stopping', 'queued')"


def _one_per_user(where: str) -> None:
    op.drop_index("uq_sessions_one_active_per_user", table_name="sessions")
    op.create_index(
        "uq_sessions_one_active_per_user",
        "sessions",
        ["user_id"],
        unique=True,
        sqlite_where=sa.text(where),
        postgresql_where=sa.text(where),
    )


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("queue_request", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("queue_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("preempt_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("preempted_for", sa.String(length=36), nullable=True))
    _one_per_user(NEW)


def downgrade() -> None:
    op.execute("UPDATE sessions SET status = 'cancelled' WHERE status = 'queued'")
    _one_per_user(OLD)
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("preempted_for")
        batch_op.drop_column("preempt_at")
        batch_op.drop_column("queue_reason")
        batch_op.drop_column("queue_request")
