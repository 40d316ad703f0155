"""placement_reason: why the placement policy chose a session's GPU and slot

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column added in place: sessions placed before it have no reason.
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("placement_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("sessions", "placement_reason")  # SQLite 3.35+ drops a column in place
