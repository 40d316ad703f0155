"""gateway connections

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "connections",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=True),
        sa.Column("client_address", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("bytes_from_client", sa.BigInteger(), nullable=False),
        sa.Column("bytes_to_client", sa.BigInteger(), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_connections_session_id"), ["session_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_connections_started_at"), ["started_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_connections_user_id"), ["user_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_connections_user_id"))
        batch_op.drop_index(batch_op.f("ix_connections_started_at"))
        batch_op.drop_index(batch_op.f("ix_connections_session_id"))

    op.drop_table("connections")
