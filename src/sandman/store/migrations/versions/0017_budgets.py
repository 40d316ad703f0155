"""budgets per team and project per month, the threshold alerts sent, and the
endings a spent budget with action "end" schedules

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("kind", sa.String(length=8), primary_key=True),
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "budget_alerts",
        sa.Column("kind", sa.String(length=8), primary_key=True),
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("month", sa.String(length=7), primary_key=True),
        sa.Column("threshold", sa.Integer(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        # action "end": when the sessions charged to the budget are ended (0 for others)
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_table("budget_alerts")
    op.drop_table("budgets")
