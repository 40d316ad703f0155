"""Engine, transactions and schema migrations.

SQLite (the default) runs in WAL mode. A write transaction (``transaction()``)
takes the write lock at its start (``BEGIN IMMEDIATE``), so concurrent
allocations queue instead of failing half-way; a read (``read()``) starts a
deferred transaction on a WAL snapshot and never waits for a writer.
PostgreSQL relies on the schema's unique constraints and row compare-and-set;
callers retry on ``IntegrityError``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
READ_ONLY = "sandman_read_only"


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """One engine and its session factory; ``db`` in the code is a transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=20,
                max_overflow=40,
            )
            _sqlite_setup(self.engine)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        self._read_engine = self.engine.execution_options(**{READ_ONLY: True})
        self._read_factory = sessionmaker(self._read_engine, expire_on_commit=False)
        self.is_sqlite = url.startswith("sqlite")
        self._writers: AbstractContextManager[Any] = (
            threading.RLock() if self.is_sqlite else nullcontext()
        )

    def migrate(self) -> None:
        """Bring the schema to the newest revision (run at every start)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A unit of work: committed on success, rolled back on any error.

        On SQLite, this process's writers also queue on a lock of their own: SQLite
        makes a waiting writer sleep and poll (up to 100 ms a time), so under a burst
        a free write lock would sit idle; the lock hands it on at once. Other
        processes still wait through SQLite's busy timeout.
        """
        with self._writers, self._factory() as db, db.begin():
            yield db

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only unit of work: one consistent snapshot, no write lock taken."""
        with self._read_factory() as db, db.begin():
            yield db

    def read_scalar(self, statement: Any) -> Any:
        """One Core query on a read-only connection: no ORM session, no write lock
        (for a hot path, such as the accounts epoch every request reads)."""
        with self._read_engine.connect() as connection:
            return connection.execute(statement).scalar()

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
