"""metrics history: one-minute averages per session and per GPU

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metric_points",
        sa.Column("kind", sa.String(length=8), primary_key=True),
        sa.Column("key", sa.String(length=96), primary_key=True),
        sa.Column("minute", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("gpu_util", sa.Float(), nullable=True),
        sa.Column("gpu_active", sa.Float(), nullable=True),
        sa.Column("cpu_percent", sa.Float(), nullable=True),
        sa.Column("fb_used_mib", sa.Float(), nullable=True),
        sa.Column("temperature_c", sa.Float(), nullable=True),
        sa.Column("power_w", sa.Float(), nullable=True),
    )
    op.create_index("ix_metric_points_minute", "metric_points", ["minute"])


def downgrade() -> None:
    op.drop_index("ix_metric_points_minute", table_name="metric_points")
    op.drop_table("metric_points")
