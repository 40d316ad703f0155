"""Fixtures for the session services over a fake runtime, a simulated GPU and SQLite.

Time is a mutable clock the tests move, so TTLs, grace periods and heartbeats
are exercised without sleeping. ``make_service`` builds further services on the
same database and runtime: each stands for another Sandman process.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.fakes.runtime import FakeRuntime

from sandman.config import Settings
from sandman.gpu.inventory import make_inventory
from sandman.gpu.types import GpuInventory
from sandman.runtime.base import SESSION_LABEL, SessionLaunch, Workspace
from sandman.services.host_keys import HostKeys
from sandman.services.sessions import SessionService
from sandman.store.database import Database
from sandman.store.models import GpuClaim, PortClaim

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock that only moves when a test moves it (thread-safe enough for reads)."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0.0, minutes: float = 0.0) -> datetime:
        self.now += timedelta(seconds=seconds, minutes=minutes)
        return self.now


class Hooks:
    """Counts every hook call per (kind, session): a teardown runs each hook once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter[tuple[str, str]] = Counter()

    def attach(self, service: SessionService) -> None:
        service.start_hooks.append(self._hook("start"))
        service.stop_hooks.append(self._hook("stop"))
        service.end_hooks.append(self._hook("end"))

    def _hook(self, kind: str) -> Callable[[str, str, str], None]:
        def hook(user_id: str, session_id: str, reason: str) -> None:
            with self.lock:
                self.calls[(kind, session_id)] += 1

        return hook

    def count(self, kind: str, session_id: str) -> int:
        with self.lock:
            return self.calls[(kind, session_id)]

    def total(self, kind: str) -> int:
        with self.lock:
            return sum(n for (k, _), n in self.calls.items() if k == kind)


def claim_rows(db: Database, session_id: str | None = None) -> tuple[int, int]:
    """(GPU claim rows, port claim rows), of one session or of all."""
    with db.read() as s:
        gpus = list(s.scalars(select(GpuClaim)))
        ports = list(s.scalars(select(PortClaim)))
    if session_id is not None:
        gpus = [g for g in gpus if g.session_id == session_id]
        ports = [p for p in ports if p.session_id == session_id]
    return len(gpus), len(ports)


def containers_of(runtime: FakeRuntime, session_id: str) -> list[str]:
    """Ids of the fake containers (running or not) labelled with the session."""
    with runtime.lock:
        return [
            c.state.id
            for c in runtime.containers.values()
            if c.state.labels.get(SESSION_LABEL) == session_id
        ]


def leftovers(db: Database, runtime: FakeRuntime, session_id: str) -> list[str]:
    """What an ended session still holds; an ended session must hold nothing."""
    found = []
    gpus, ports = claim_rows(db, session_id)
    if gpus:
        found.append(f"{gpus} GPU claim rows")
    if ports:
        found.append(f"{ports} port claim rows")
    containers = containers_of(runtime, session_id)
    if containers:
        found.append(f"containers {containers}")
    if runtime.discarded[session_id] != 1:
        found.append(f"discard called {runtime.discarded[session_id]} times")
    return found


def fake_launch(name: str, labels: dict[str, str]) -> SessionLaunch:
    """A launch for a container that no session of this service started."""
    return SessionLaunch(
        session_id=labels.get(SESSION_LABEL, ""),
        name=name,
        image="sandman-workspace:latest",
        command=("sleep", "infinity"),
        hostname=name,
        workspace=Workspace(user_id="nobody", uid=20000, gid=20000),
        labels=labels,
    )


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` (bounded) instead of sleeping a guessed amount."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def base_settings(tmp_path: Path, **overrides: object) -> Settings:
    """The services tests' settings, with ``overrides`` (parsed as settings are)."""
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "admin_token": "t",
        "ssh_mode": "direct",
        "start_timeout": 2,
        "stop_grace_period": 0,
        "reconcile_grace": 0,
        "ssh_port_start": 41000,
        "ssh_port_end": 41999,
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return base_settings(tmp_path)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'sandman.db'}")
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def runtime() -> Iterator[FakeRuntime]:
    fake = FakeRuntime(publishes_ports=True)
    yield fake
    if fake.start_gate is not None:
        fake.start_gate.set()  # never leave a starter blocked past the test


@pytest.fixture
def inventory(tmp_path: Path) -> GpuInventory:
    return make_inventory(
        "simulated", topology="a100-40gb-7x1g", state_path=tmp_path / "gpus.json", seed="t"
    )


@pytest.fixture
def hooks() -> Hooks:
    return Hooks()


@pytest.fixture
def make_service(
    tmp_path: Path,
    settings: Settings,
    db: Database,
    runtime: FakeRuntime,
    inventory: GpuInventory,
    clock: Clock,
    hooks: Hooks,
) -> Callable[..., SessionService]:
    """A service for ``worker_id`` on the shared database, runtime, GPUs and clock
    (another runtime or inventory may be given, for tests that break or swap them)."""

    def build(
        worker_id: str,
        *,
        runtime: FakeRuntime = runtime,
        inventory: GpuInventory = inventory,
    ) -> SessionService:
        service = SessionService(
            settings,
            db,
            runtime,
            inventory,
            HostKeys(tmp_path),
            deployment_id="dep",
            worker_id=worker_id,
            clock=clock,
            probe=runtime.probe,
        )
        hooks.attach(service)
        return service

    return build


@pytest.fixture
def service(make_service: Callable[..., SessionService]) -> SessionService:
    return make_service("w1")
