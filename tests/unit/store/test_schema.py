"""The schema as the migrations build it: it matches the models and enforces the rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError

from sandman.store.database import Database
from sandman.store.models import Base, GpuClaim, PortClaim, User
from sandman.store.models import Session as SessionRow

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'test.db'}")
    database.migrate()
    database.migrate()  # idempotent
    return database


def _session(session_id: str, status: str, user_id: str = "alice") -> SessionRow:
    return SessionRow(
        id=session_id, user_id=user_id, status=status, image="img", container_name="c",
        cpus=1, memory="1g", ttl_minutes=60, created_at=NOW,
        expires_at=NOW + timedelta(hours=1), labels={}, authorized_keys=[],
    )  # fmt: skip


def test_migrations_match_the_models(db: Database) -> None:
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_one_active_session_per_user(db: Database) -> None:
    with db.transaction() as tx:
        tx.add(User(user_id="alice", uid=20000, gid=20000, ssh_public_keys=[]))
        tx.flush()
        tx.add(_session("s1", "running"))
        tx.add(_session("s0", "deleted"))
    with pytest.raises(IntegrityError), db.transaction() as tx:
        tx.add(_session("s2", "starting"))
    with db.transaction() as tx:
        tx.get_one(SessionRow, "s1").status = "expired"
        tx.add(_session("s3", "starting"))


def test_gpu_units_and_ports_are_held_once(db: Database) -> None:
    with db.transaction() as tx:
        tx.add(User(user_id="alice", uid=20000, gid=20000, ssh_public_keys=[]))
        tx.add(User(user_id="bob", uid=20001, gid=20001, ssh_public_keys=[]))
        tx.flush()
        tx.add(_session("s1", "running"))
        tx.add(_session("s2", "running", "bob"))
        tx.flush()
        tx.add(GpuClaim(gpu_uuid="GPU-1", unit="slot:0", session_id="s1", start=0, size=1))
        tx.add(PortClaim(port=10000, session_id="s1"))
    with pytest.raises(IntegrityError), db.transaction() as tx:
        tx.add(GpuClaim(gpu_uuid="GPU-1", unit="slot:0", session_id="s2", start=0, size=1))
    with pytest.raises(IntegrityError), db.transaction() as tx:
        tx.add(PortClaim(port=10000, session_id="s2"))
    with pytest.raises(IntegrityError), db.transaction() as tx:
        tx.add(User(user_id="carol", uid=20000, gid=20000, ssh_public_keys=[]))


def test_timestamps_come_back_aware(db: Database) -> None:
    with db.transaction() as tx:
        tx.add(User(user_id="alice", uid=20000, gid=20000, ssh_public_keys=[]))
        tx.flush()
        tx.add(_session("s1", "running"))
    with db.transaction() as tx:
        assert tx.get_one(SessionRow, "s1").expires_at == NOW + timedelta(hours=1)
