"""quotas per user, team and project, and the defaults of each kind; sessions'
priority class

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("priority", sa.String(length=8), nullable=False, server_default="normal")
        )
    op.create_table(
        "quotas",
        sa.Column("kind", sa.String(length=8), primary_key=True),
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("limits", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("quotas")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("priority")
