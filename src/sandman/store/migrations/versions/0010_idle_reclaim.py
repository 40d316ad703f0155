"""idle reclaim: per-session idle timeouts and activity

A session may ask for its own idle timeout (``sessions.idle_timeout_minutes``:
null for the deployment's, 0 for never). ``session_idle`` keeps what the idle
sweep last saw of each session: its last busy moment and the warning standing.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idle_timeout_minutes", sa.Integer(), nullable=True))
    op.create_table(
        "session_idle",
        sa.Column(
            "session_id", sa.String(length=36), sa.ForeignKey("sessions.id"), primary_key=True
        ),
        sa.Column("busy_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notice", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("session_idle")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("idle_timeout_minutes")
