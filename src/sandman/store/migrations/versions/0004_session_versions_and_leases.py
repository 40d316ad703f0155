"""session row versions, endpoints, admin GPU claims, leases

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("endpoint_host", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("endpoint_port", sa.Integer(), nullable=True))
        batch_op.create_index("ix_sessions_created_at_id", ["created_at", "id"])
    with op.batch_alter_table("gpu_claims", schema=None) as batch_op:
        batch_op.alter_column("session_id", existing_type=sa.String(length=36), nullable=True)
        batch_op.add_column(sa.Column("held_by", sa.String(length=64), nullable=True))
    op.execute(
        "UPDATE sessions SET endpoint_host = '127.0.0.1', endpoint_port = ssh_port "
        "WHERE status IN ('starting', 'running', 'stopping') AND ssh_port IS NOT NULL"
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    with op.batch_alter_table("gpu_claims", schema=None) as batch_op:
        batch_op.drop_column("held_by")
        batch_op.alter_column("session_id", existing_type=sa.String(length=36), nullable=False)
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_sessions_created_at_id")
        batch_op.drop_column("endpoint_port")
        batch_op.drop_column("endpoint_host")
        batch_op.drop_column("version")
