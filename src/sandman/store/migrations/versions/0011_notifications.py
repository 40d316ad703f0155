"""notification channels per user and their defaults

One table: a row per user who chose their channels, and the rows ``@admins``
(where alerts that concern no session go) and ``@users`` (what a user who chose
nothing gets).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_channels",
        sa.Column("owner", sa.String(length=64), primary_key=True),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("webhook_format", sa.String(length=8), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("terminal", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=96), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("notification_channels")
