"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("uid", sa.Integer(), nullable=False),
        sa.Column("gid", sa.Integer(), nullable=False),
        sa.Column("ssh_public_keys", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
        sa.UniqueConstraint("uid"),
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("image", sa.String(length=255), nullable=False),
        sa.Column("container_id", sa.String(length=80), nullable=True),
        sa.Column("container_name", sa.String(length=80), nullable=False),
        sa.Column("container_ip", sa.String(length=64), nullable=True),
        sa.Column("ssh_port", sa.Integer(), nullable=True),
        sa.Column("host_public_key", sa.Text(), nullable=True),
        sa.Column("gpu_uuid", sa.Text(), nullable=True),
        sa.Column("gpu_parent_uuid", sa.Text(), nullable=True),
        sa.Column("gpu_name", sa.String(length=96), nullable=True),
        sa.Column("mig_profile", sa.String(length=32), nullable=True),
        sa.Column("mig_instance_uuid", sa.String(length=96), nullable=True),
        sa.Column("gpu_fallback", sa.Boolean(), nullable=False),
        sa.Column("cpus", sa.Double(), nullable=False),
        sa.Column("memory", sa.String(length=16), nullable=False),
        sa.Column("team", sa.String(length=64), nullable=True),
        sa.Column("project", sa.String(length=64), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("authorized_keys", sa.JSON(), nullable=False),
        sa.Column("ttl_minutes", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_activity", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.Text(), nullable=True),
        sa.Column("stop_status", sa.String(length=16), nullable=True),
        sa.Column("worker_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.user_id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sessions_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_sessions_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_sessions_team"), ["team"], unique=False)
        batch_op.create_index(batch_op.f("ix_sessions_user_id"), ["user_id"], unique=False)
        batch_op.create_index(
            "uq_sessions_one_active_per_user",
            ["user_id"],
            unique=True,
            sqlite_where=sa.text("status IN ('starting', 'running', 'stopping')"),
            postgresql_where=sa.text("status IN ('starting', 'running', 'stopping')"),
        )

    op.create_table(
        "gpu_claims",
        sa.Column("gpu_uuid", sa.String(length=96), nullable=False),
        sa.Column("unit", sa.String(length=16), nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("start", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("profile", sa.String(length=32), nullable=True),
        sa.Column("instance_uuid", sa.String(length=96), nullable=True),
        sa.Column("created_instance", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
        ),
        sa.PrimaryKeyConstraint("gpu_uuid", "unit"),
    )
    with op.batch_alter_table("gpu_claims", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gpu_claims_session_id"), ["session_id"], unique=False)

    op.create_table(
        "port_claims",
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
        ),
        sa.PrimaryKeyConstraint("port"),
    )
    with op.batch_alter_table("port_claims", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_port_claims_session_id"), ["session_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("port_claims", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_port_claims_session_id"))

    op.drop_table("port_claims")
    with op.batch_alter_table("gpu_claims", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gpu_claims_session_id"))

    op.drop_table("gpu_claims")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_sessions_one_active_per_user",
            sqlite_where=sa.text("status IN ('starting', 'running', 'stopping')"),
            postgresql_where=sa.text("status IN ('starting', 'running', 'stopping')"),
        )
        batch_op.drop_index(batch_op.f("ix_sessions_user_id"))
        batch_op.drop_index(batch_op.f("ix_sessions_team"))
        batch_op.drop_index(batch_op.f("ix_sessions_status"))
        batch_op.drop_index(batch_op.f("ix_sessions_expires_at"))

    op.drop_table("sessions")
    op.drop_table("workers")
    op.drop_table("users")
    op.drop_table("meta")
