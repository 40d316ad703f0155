"""Fixtures for idle reclaim over the fake runtime, a simulated GPU and SQLite.

The fake runtime answers the idle probe with what a test says happened inside a
session (terminal input, the keepalive file, transfers, CPU used) and records
what was written to the session's terminals; the clock only moves when a test
moves it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
from tests.fakes.runtime import FakeRuntime
from tests.unit.services import conftest as services
from tests.unit.services.conftest import Clock

from sandman.config import Settings
from sandman.errors import RuntimeFailure
from sandman.observe import terminal
from sandman.observe.idle_activity import PROBE_SCRIPT
from sandman.observe.idle_sweep import IdleReclaim
from sandman.observe.samples import MetricsSnapshot, SessionActivity
from sandman.runtime.base import ExecResult
from sandman.services.requests import SessionRequest
from sandman.services.sessions import SessionService
from sandman.store.models import Session as SessionRow

# The session services' fixtures (database, simulated GPUs, clock), over this runtime.
clock = services.clock
db = services.db
hooks = services.hooks
inventory = services.inventory
make_service = services.make_service


@dataclass
class Inside:
    """What happened inside one session, as its probe reports it."""

    cpu_seconds: float = 0.0
    terminal_input: datetime | None = None
    keepalive: datetime | None = None
    transfers: int = 0
    messages: list[str] = field(default_factory=list)  # written to its terminals
    fails: bool = False  # the probe cannot run
    on_probe: Callable[[], None] | None = None


class ProbedRuntime(FakeRuntime):
    def __init__(self, clock: Clock) -> None:
        super().__init__(publishes_ports=True)
        self.clock = clock
        self.inside: dict[str, Inside] = {}  # by session id
        self.running_execs = 0
        self.most_execs = 0
        self.exec_delay = 0.0
        self._gauge = threading.Lock()

    def of(self, session_id: str) -> Inside:
        return self.inside.setdefault(session_id, Inside())

    def exec(self, name_or_id: str, argv: Sequence[str], user: str, timeout: float) -> ExecResult:
        super().exec(name_or_id, argv, user, timeout)  # counts, and checks it runs
        with self.lock:
            found = self._find(name_or_id)
            assert found is not None
            session_id = found.launch.session_id
        inside = self.of(session_id)
        with self._gauge:
            self.running_execs += 1
            self.most_execs = max(self.most_execs, self.running_execs)
        try:
            time.sleep(self.exec_delay)
            if list(argv[:3]) == ["sh", "-c", PROBE_SCRIPT]:
                return self._probe(inside, user)
            if list(argv[:3]) == ["sh", "-c", terminal.SCRIPT]:
                inside.messages.append(argv[4])
                inside.cpu_seconds += 60  # writing costs the container CPU (a lot, here)
                return ExecResult(0, "1\n")
            return ExecResult(0, "")
        finally:
            with self._gauge:
                self.running_execs -= 1

    def _probe(self, inside: Inside, user: str) -> ExecResult:
        if inside.fails:
            raise RuntimeFailure("the probe could not run")
        if inside.on_probe is not None:
            inside.on_probe()
        now = self.clock().timestamp()
        uid = user.split(":")[0]
        usec = int(inside.cpu_seconds * 1e6)
        lines = [f"cpu {now:.3f} {usec} us"]
        if inside.terminal_input is not None:
            lines.append(f"tty {uid} {int(inside.terminal_input.timestamp())}")
        lines.append(f"tty 0 {int(now)}")  # another user's terminal: never counted
        if inside.keepalive is not None:
            lines.append(f"keepalive {int(inside.keepalive.timestamp())}")
        lines.append(f"transfers {inside.transfers}")
        lines.append(f"cpu_end {now:.3f} {usec} us")
        return ExecResult(0, "\n".join(lines) + "\n")


class FakeMetrics:
    """The metrics collector as idle reclaim reads it."""

    def __init__(self) -> None:
        self.samples: dict[str, SessionActivity] = {}

    def latest(self) -> MetricsSnapshot | None:
        return None

    def activity(self, session_id: str) -> SessionActivity | None:
        return self.samples.get(session_id)


class Told:
    """A notifier that keeps what it was told."""

    def __init__(self) -> None:
        self.notices: list[tuple[str, str, str, str]] = []

    def notify(self, user_id: str, session_id: str, subject: str, text: str) -> None:
        self.notices.append((user_id, session_id, subject, text))

    def subjects(self, session_id: str) -> list[str]:
        return [subject for _, sid, subject, _ in self.notices if sid == session_id]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return services.base_settings(tmp_path, idle_timeout="60m", idle_warnings="15m,2m")


@pytest.fixture
def runtime(clock: Clock) -> ProbedRuntime:
    return ProbedRuntime(clock)


@pytest.fixture
def service(make_service: Callable[..., SessionService], runtime: ProbedRuntime) -> SessionService:
    return make_service("w1", runtime=runtime)


@pytest.fixture
def metrics() -> FakeMetrics:
    return FakeMetrics()


@pytest.fixture
def told() -> Told:
    return Told()


@pytest.fixture
def reclaim(service: SessionService, metrics: FakeMetrics, told: Told) -> IdleReclaim:
    idle = IdleReclaim(service, activity=metrics)
    idle.notifiers.append(told)
    return idle


def start(service: SessionService, user_id: str, idle_minutes: int | None = None) -> SessionRow:
    """A running session with a long TTL (idle reclaim, not the reaper, ends it)."""
    request = SessionRequest(user_id=user_id, ttl_minutes=600, idle_timeout_minutes=idle_minutes)
    return service.create(request).session
