"""Upgrading a database from before accounts: users known from sessions get role
``user``, and the free-text teams and projects on sessions become records."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from sandman.store.database import MIGRATIONS_DIR, Database

OLD_SESSION = (
    "INSERT INTO sessions (id, user_id, status, image, container_name, cpus, memory, team, "
    "project, labels, authorized_keys, ttl_minutes, created_at, expires_at, gpu_fallback, "
    "version) VALUES (:id, :user, 'deleted', 'img', :id, 1, '1g', :team, :project, '{}', "
    "'[]', 60, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 0, 0)"
)


def upgrade_to(url: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = create_engine(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    engine.dispose()


def test_existing_users_teams_and_projects_become_records(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    before_accounts = Database(url)
    before_accounts.migrate()  # the newest schema: then go back to just before accounts
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with before_accounts.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0007-1")
    with before_accounts.engine.begin() as connection:
        for user, uid in [("alice", 20000), ("bob", 20001), ("carol", 20002)]:
            connection.execute(
                text(
                    "INSERT INTO users (user_id, uid, gid, ssh_public_keys, created_at) "
                    "VALUES (:u, :uid, :uid, '[]', CURRENT_TIMESTAMP)"
                ),
                {"u": user, "uid": uid},
            )
        for sid, user, team, project in [
            ("s1", "alice", "ml", "llm"),
            ("s2", "bob", "ml", None),
            ("s3", "bob", "cv", "llm"),  # the same project under a second team
            ("s4", "carol", None, "orphan"),
            ("s5", "carol", None, None),
        ]:
            connection.execute(
                text(OLD_SESSION), {"id": sid, "user": user, "team": team, "project": project}
            )
    before_accounts.dispose()

    db = Database(url)
    db.migrate()
    with db.engine.connect() as connection:
        users = connection.execute(
            text("SELECT user_id, role, status FROM users ORDER BY user_id")
        ).all()
        teams = connection.execute(text("SELECT name FROM teams ORDER BY name")).scalars().all()
        members = connection.execute(
            text("SELECT team, user_id, role FROM team_members ORDER BY team, user_id")
        ).all()
        projects = connection.execute(text("SELECT name, team FROM projects ORDER BY name")).all()
    db.dispose()
    assert [tuple(u) for u in users] == [
        ("alice", "user", "active"),
        ("bob", "user", "active"),
        ("carol", "user", "active"),
    ]
    assert teams == ["cv", "default", "ml"]
    assert [tuple(m) for m in members] == [
        ("cv", "bob", "member"),
        ("ml", "alice", "member"),
        ("ml", "bob", "member"),
    ]
    assert [tuple(p) for p in projects] == [("llm", "cv"), ("orphan", "default")]
