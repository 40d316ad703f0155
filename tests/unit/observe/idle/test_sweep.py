"""The idle sweep over the fake runtime, with time moved by hand: idle sessions are
warned where their user is and reclaimed as ``idle`` with everything given back;
any activity keeps a session; one failing session never stops the sweep; one
process sweeps at a time; a restart never reclaims on what it did not see."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select
from tests.unit.observe.idle.conftest import FakeMetrics, ProbedRuntime, Told, start
from tests.unit.services.conftest import START, Clock, leftovers

from sandman.domain import SessionStatus
from sandman.observe.idle_sweep import IdleReclaim
from sandman.observe.samples import SessionActivity
from sandman.services.sessions import SessionService
from sandman.store.models import SessionIdle


def sweep_at(reclaim: IdleReclaim, clock: Clock, minute: float) -> list[str]:
    clock.now = START + timedelta(minutes=minute)
    return reclaim.sweep()


def status(service: SessionService, session_id: str) -> str:
    return service.get(session_id).status


def test_an_idle_session_is_warned_then_reclaimed(
    service: SessionService,
    reclaim: IdleReclaim,
    runtime: ProbedRuntime,
    clock: Clock,
    told: Told,
) -> None:
    row = start(service, "alice")
    for minute in (0, 30, 44):
        assert sweep_at(reclaim, clock, minute) == []
    assert told.notices == []
    assert sweep_at(reclaim, clock, 45) == []  # the 15-minute warning
    assert sweep_at(reclaim, clock, 50) == []
    assert sweep_at(reclaim, clock, 58) == []  # the 2-minute warning
    assert told.subjects(row.id) == [
        f"Sandman session {row.id} is idle: reclaimed in 15 min",
        f"Sandman session {row.id} is idle: reclaimed in 2 min",
    ]
    messages = runtime.of(row.id).messages
    assert len(messages) == 2 and "reclaimed in 15 min" in messages[0]
    assert "sandman-keepalive" in messages[0] and messages[0].endswith("\r\n")
    assert sweep_at(reclaim, clock, 60) == [row.id]
    ended = service.get(row.id)
    assert ended.status == SessionStatus.IDLE
    assert ended.end_reason == (
        "idle for 60 min (no SSH traffic for 60 min, CPU 0%); idle timeout 60 min"
    )
    assert leftovers(service.db, runtime, row.id) == []  # GPU slice, port, container
    assert "is being reclaimed" in runtime.of(row.id).messages[-1]  # told before it went
    assert told.subjects(row.id)[-1] == f"Sandman session {row.id} was reclaimed: idle"
    assert sweep_at(reclaim, clock, 61) == []


def test_a_busy_cpu_keeps_a_session_without_connections(
    service: SessionService, reclaim: IdleReclaim, runtime: ProbedRuntime, clock: Clock
) -> None:
    """A training job in a detached tmux: nobody connected, the CPU busy."""
    row = start(service, "bob")
    for minute in range(0, 181, 10):
        runtime.of(row.id).cpu_seconds += 600 * 0.5  # half a core for 10 min
        assert sweep_at(reclaim, clock, minute) == []
    assert status(service, row.id) == SessionStatus.RUNNING
    assert runtime.of(row.id).messages == []
    for minute in range(190, 251, 10):  # the job ends: idle from 180
        sweep_at(reclaim, clock, minute)
    assert status(service, row.id) == SessionStatus.IDLE


def test_cpu_below_the_threshold_is_idle(
    service: SessionService, reclaim: IdleReclaim, runtime: ProbedRuntime, clock: Clock
) -> None:
    row = start(service, "carl")
    for minute in range(0, 61, 10):
        runtime.of(row.id).cpu_seconds += 600 * 0.04  # 4% of a core
        sweep_at(reclaim, clock, minute)
    assert status(service, row.id) == SessionStatus.IDLE
    assert "CPU 4.0%" in (service.get(row.id).end_reason or "")


def test_gpu_activity_from_the_collector_keeps_a_session(
    service: SessionService, reclaim: IdleReclaim, metrics: FakeMetrics, clock: Clock
) -> None:
    row = start(service, "dana")
    assert row.gpu_uuid
    for minute in range(0, 121, 10):
        clock.now = START + timedelta(minutes=minute)
        metrics.samples[row.id] = SessionActivity(row.id, 0.9, 1.0, clock.now)
        reclaim.sweep()
    assert status(service, row.id) == SessionStatus.RUNNING
    for minute in range(130, 191, 10):  # the GPU falls quiet: 3% counts as idle
        clock.now = START + timedelta(minutes=minute)
        metrics.samples[row.id] = SessionActivity(row.id, 0.03, 1.0, clock.now)
        reclaim.sweep()
    assert status(service, row.id) == SessionStatus.IDLE
    assert "GPU 3.0%" in (service.get(row.id).end_reason or "")


def test_terminal_input_transfers_and_the_keepalive_keep_a_session(
    service: SessionService, reclaim: IdleReclaim, runtime: ProbedRuntime, clock: Clock
) -> None:
    typing, copying, kept = (start(service, name) for name in ("erin", "finn", "gail"))
    runtime.of(copying.id).transfers = 1
    runtime.of(kept.id).keepalive = START + timedelta(minutes=90)  # sandman-keepalive 90m
    for minute in range(0, 121, 10):
        runtime.of(typing.id).terminal_input = START + timedelta(minutes=minute)
        sweep_at(reclaim, clock, minute)
    assert {status(service, r.id) for r in (typing, copying, kept)} == {SessionStatus.RUNNING}
    runtime.of(copying.id).transfers = 0
    sweep_at(reclaim, clock, 150)
    assert status(service, kept.id) == SessionStatus.IDLE  # kept until 90, idle from then
    sweep_at(reclaim, clock, 179)
    assert {status(service, r.id) for r in (typing, copying)} == {SessionStatus.RUNNING}
    sweep_at(reclaim, clock, 180)  # typed and copied last at 120
    assert {status(service, r.id) for r in (typing, copying)} == {SessionStatus.IDLE}


def test_traffic_an_extension_and_web_use_keep_a_session(
    service: SessionService, reclaim: IdleReclaim, clock: Clock, told: Told
) -> None:
    row = start(service, "hana")
    sweep_at(reclaim, clock, 0)
    sweep_at(reclaim, clock, 50)  # warned
    reclaim.touch(row.id)  # the gateway saw channel data, or a web app was used
    assert sweep_at(reclaim, clock, 60) == []
    clock.now = START + timedelta(minutes=100)
    service.extend(row.id, 600)  # PATCH /sessions/{id}
    assert sweep_at(reclaim, clock, 119) == []
    assert status(service, row.id) == SessionStatus.RUNNING
    assert sweep_at(reclaim, clock, 160) == [row.id]
    assert told.subjects(row.id) == [
        f"Sandman session {row.id} is idle: reclaimed in 10 min",  # the sweep at 50
        f"Sandman session {row.id} was reclaimed: idle",
    ]


def test_an_extension_racing_the_reclaim_wins(
    service: SessionService, reclaim: IdleReclaim, runtime: ProbedRuntime, clock: Clock
) -> None:
    row = start(service, "ines")
    sweep_at(reclaim, clock, 0)
    runtime.of(row.id).on_probe = lambda: service.extend(row.id, 600)  # after the read
    assert sweep_at(reclaim, clock, 60) == []
    assert status(service, row.id) == SessionStatus.RUNNING


def test_a_sessions_own_timeout(
    service: SessionService, reclaim: IdleReclaim, clock: Clock
) -> None:
    never, short, default = start(service, "jo", 0), start(service, "kai", 10), start(service, "lu")
    sweep_at(reclaim, clock, 0)
    assert sweep_at(reclaim, clock, 10) == [short.id]
    assert sweep_at(reclaim, clock, 60) == [default.id]
    assert sweep_at(reclaim, clock, 6000) == []
    assert status(service, never.id) == SessionStatus.RUNNING
    assert service.get(short.id).end_reason == (
        "idle for 10 min (no SSH traffic for 10 min, CPU 0%); idle timeout 10 min"
    )


def test_one_failing_session_never_stops_the_sweep(
    service: SessionService, reclaim: IdleReclaim, runtime: ProbedRuntime, clock: Clock
) -> None:
    broken, fine = start(service, "mo"), start(service, "nia")
    runtime.of(broken.id).fails = True
    sweep_at(reclaim, clock, 0)
    assert sweep_at(reclaim, clock, 60) == [fine.id]
    assert status(service, broken.id) == SessionStatus.RUNNING  # never reclaimed blind
    runtime.of(broken.id).fails = False
    assert sweep_at(reclaim, clock, 61) == []  # watched from its first look inside...
    assert sweep_at(reclaim, clock, 120) == []
    assert sweep_at(reclaim, clock, 121) == [broken.id]  # ...one timeout on


def test_a_failing_notifier_neither(
    service: SessionService, reclaim: IdleReclaim, clock: Clock
) -> None:
    class Broken:
        def notify(self, user_id: str, session_id: str, subject: str, text: str) -> None:
            raise OSError("the mail server is down")

    reclaim.notifiers.insert(0, Broken())
    row = start(service, "olga")
    sweep_at(reclaim, clock, 0)
    sweep_at(reclaim, clock, 45)
    assert sweep_at(reclaim, clock, 60) == [row.id]


def test_looks_inside_are_bounded(
    make_service: Callable[..., SessionService], runtime: ProbedRuntime, clock: Clock
) -> None:
    service = make_service("w1", runtime=runtime)
    rows = [start(service, f"user{i}") for i in range(6)]
    runtime.exec_delay = 0.05
    reclaim = IdleReclaim(service, concurrency=2)
    sweep_at(reclaim, clock, 0)
    assert runtime.most_execs == 2
    assert sorted(sweep_at(reclaim, clock, 60)) == sorted(r.id for r in rows)


def test_a_restart_never_reclaims_on_what_it_did_not_see(
    service: SessionService, reclaim: IdleReclaim, clock: Clock
) -> None:
    row = start(service, "pia")
    sweep_at(reclaim, clock, 0)
    sweep_at(reclaim, clock, 50)
    restarted = IdleReclaim(service)  # a new process: nothing in memory
    assert sweep_at(restarted, clock, 300) == []  # idle long, but watched only from now
    assert sweep_at(restarted, clock, 359) == []
    assert sweep_at(restarted, clock, 360) == [row.id]


def test_one_process_sweeps_at_a_time(
    make_service: Callable[..., SessionService], runtime: ProbedRuntime, clock: Clock
) -> None:
    first, second = make_service("w1", runtime=runtime), make_service("w2", runtime=runtime)
    row = start(first, "quin")
    a, b = IdleReclaim(first), IdleReclaim(second)
    sweep_at(a, clock, 0)
    assert sweep_at(b, clock, 0) == []
    sweep_at(a, clock, 45)
    assert sweep_at(b, clock, 45) == []
    assert len(runtime.of(row.id).messages) == 1  # warned once
    # The first process stops; once its lease runs out the second takes over and
    # watches from then.
    assert sweep_at(b, clock, 50) == []
    assert sweep_at(b, clock, 60) == []
    assert sweep_at(b, clock, 110) == [row.id]


def test_the_login_banner_tells_of_a_warning_standing(
    service: SessionService, reclaim: IdleReclaim, clock: Clock
) -> None:
    row = start(service, "rita")
    sweep_at(reclaim, clock, 0)
    assert reclaim.banner(row.id) == (
        "  Idle:    reclaimed after 60 min without activity (sandman-keepalive keeps it)\n"
    )
    sweep_at(reclaim, clock, 46)
    banner = reclaim.banner(row.id)
    assert re.search(
        r"Warning: idle for 46 min \(.*\); it was to be reclaimed at 13:00:00 UTC", banner
    )
    sweep_at(reclaim, clock, 50)
    assert "Warning" in reclaim.banner(row.id)  # still standing
    reclaim.touch(row.id)
    sweep_at(reclaim, clock, 51)
    assert "Warning" not in reclaim.banner(row.id)
    with service.db.read() as db:
        state = db.scalars(select(SessionIdle)).one()
    assert state.busy_at == START + timedelta(minutes=50) and state.notice is None
    assert reclaim.banner("no-such-session") == ""


def test_without_a_timeout_nothing_is_looked_into(
    make_service: Callable[..., SessionService], runtime: ProbedRuntime, clock: Clock
) -> None:
    service = make_service("w1", runtime=runtime)
    service.settings.idle_timeout = 0.0
    start(service, "sam")
    reclaim = IdleReclaim(service)
    assert sweep_at(reclaim, clock, 0) == [] and sweep_at(reclaim, clock, 6000) == []
    assert runtime.calls["exec"] == 0
