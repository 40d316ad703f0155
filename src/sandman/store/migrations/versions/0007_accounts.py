"""accounts: roles and status on users, teams, projects, tokens, web logins, audit trail

Users known from sessions, keys and passwords already have rows; they get role
``user``. The free-text team and project names on existing sessions become
records: each session's user joins its team, and a project named without a team
goes to the team ``default``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

NOW = sa.func.current_timestamp()
WITHOUT_TEAM = "default"


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("display_name", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("email", sa.String(length=254), nullable=True))
        batch_op.add_column(
            sa.Column("role", sa.String(length=16), nullable=False, server_default="user")
        )
        batch_op.add_column(
            sa.Column("status", sa.String(length=16), nullable=False, server_default="active")
        )
        batch_op.add_column(sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("oidc_issuer", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("oidc_subject", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("default_team", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("default_project", sa.String(length=64), nullable=True))
    # An index, not a constraint: SQLite would rebuild the users table for a constraint,
    # and sessions refer to it.
    op.create_index("uq_users_oidc", "users", ["oidc_issuer", "oidc_subject"], unique=True)
    op.create_table(
        "teams",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "team_members",
        sa.Column(
            "team",
            sa.String(length=64),
            sa.ForeignKey("teams.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "user_id", sa.String(length=32), sa.ForeignKey("users.user_id"), primary_key=True
        ),
        sa.Column("role", sa.String(length=8), nullable=False),
    )
    op.create_index("ix_team_members_user_id", "team_members", ["user_id"])
    op.create_table(
        "projects",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("team", sa.String(length=64), sa.ForeignKey("teams.name"), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_projects_team", "projects", ["team"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(length=16), primary_key=True),
        sa.Column("user_id", sa.String(length=32), sa.ForeignKey("users.user_id"), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    op.create_table(
        "web_logins",
        sa.Column("secret_hash", sa.String(length=64), primary_key=True),
        sa.Column("user_id", sa.String(length=32), sa.ForeignKey("users.user_id"), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_web_logins_user_id", "web_logins", ["user_id"])
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=96), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=True),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False, unique=True),
    )
    for column in ("at", "actor", "action", "target"):
        op.create_index(f"ix_audit_log_{column}", "audit_log", [column])

    # The free-text names on existing sessions become records.
    op.execute(
        sa.text(
            "INSERT INTO teams (name, created_at) "
            "SELECT DISTINCT team, CURRENT_TIMESTAMP FROM sessions WHERE team IS NOT NULL"
        )
    )
    op.execute(
        sa.text(
            "INSERT INTO teams (name, created_at) SELECT :name, CURRENT_TIMESTAMP "
            "WHERE EXISTS (SELECT 1 FROM sessions WHERE project IS NOT NULL AND team IS NULL) "
            "AND NOT EXISTS (SELECT 1 FROM teams WHERE name = :name)"
        ).bindparams(name=WITHOUT_TEAM)
    )
    op.execute(
        sa.text(
            "INSERT INTO team_members (team, user_id, role) "
            "SELECT DISTINCT team, user_id, 'member' FROM sessions WHERE team IS NOT NULL"
        )
    )
    # A project named under several teams goes to the first of them by name.
    op.execute(
        sa.text(
            "INSERT INTO projects (name, team, created_at) "
            "SELECT project, MIN(COALESCE(team, :name)), CURRENT_TIMESTAMP FROM sessions "
            "WHERE project IS NOT NULL GROUP BY project"
        ).bindparams(name=WITHOUT_TEAM)
    )


def downgrade() -> None:
    for table in ("audit_log", "web_logins", "api_tokens", "projects", "team_members", "teams"):
        op.drop_table(table)
    op.drop_index("uq_users_oidc", table_name="users")
    with op.batch_alter_table("users", schema=None) as batch_op:
        for column in (
            "default_project",
            "default_team",
            "oidc_subject",
            "oidc_issuer",
            "last_seen_at",
            "status",
            "role",
            "email",
            "display_name",
        ):
            batch_op.drop_column(column)
