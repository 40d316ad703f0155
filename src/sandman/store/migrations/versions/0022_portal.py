"""portal: the apps origin's one-time codes and logins (apps_codes, apps_logins)

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "apps_codes",
        sa.Column("code_hash", sa.String(length=64), primary_key=True),
        sa.Column(
            "user_id",
            sa.String(length=32),
            sa.ForeignKey("users.user_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("app", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_apps_codes_expires_at", "apps_codes", ["expires_at"])
    op.create_table(
        "apps_logins",
        sa.Column("secret_hash", sa.String(length=64), primary_key=True),
        sa.Column(
            "user_id",
            sa.String(length=32),
            sa.ForeignKey("users.user_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_apps_logins_user_id", "apps_logins", ["user_id"])
    op.create_index("ix_apps_logins_expires_at", "apps_logins", ["expires_at"])


def downgrade() -> None:
    op.drop_table("apps_logins")
    op.drop_table("apps_codes")
