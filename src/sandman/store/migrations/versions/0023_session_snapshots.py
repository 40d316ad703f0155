"""snapshots of sessions' writable layers (their changes outside /workspace), kept
as local images per user and session when SANDMAN_SNAPSHOT_MAX_SIZE enables them

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No foreign key to sessions: a record outlives its session row, so an image
    # Sandman made is never forgotten while it exists.
    op.create_table(
        "session_snapshots",
        sa.Column("session_id", sa.String(length=36), primary_key=True),
        sa.Column("user_id", sa.String(length=32), nullable=False, index=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("image", sa.String(length=255), nullable=True),
        sa.Column("image_id", sa.String(length=80), nullable=True),
        sa.Column("base_image", sa.String(length=255), nullable=True),
        sa.Column("layer_bytes", sa.BigInteger(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("depth", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pruned_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("session_snapshots")
