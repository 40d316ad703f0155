"""gpu_sharing: the fraction of a shared GPU (time-slicing or MPS) a session holds

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


# Columns are added and dropped in place: the sessions table is never rebuilt.


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gpu_share", sa.Double(), nullable=True))


def downgrade() -> None:
    op.drop_column("sessions", "gpu_share")  # SQLite 3.35+ drops a column in place
