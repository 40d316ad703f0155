"""Races between enders: of any number of concurrent callers, one runs the teardown.

Many threads are released at once behind a barrier so that their compare-and-sets
really interleave; each test then counts what the teardown does (hooks, container
removals, runtime discards), which must be exactly once per session.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from tests.fakes.runtime import FakeRuntime
from tests.unit.services.conftest import Clock, Hooks, claim_rows, leftovers, wait_until

from sandman.domain import ACTIVE_STATUSES, SessionStatus
from sandman.errors import Conflict, RuntimeFailure
from sandman.services.reaper import Reaper
from sandman.services.requests import SessionRequest
from sandman.services.sessions import CreatedSession, SessionService
from sandman.store.models import Session as SessionRow

ENDED = {SessionStatus.DELETED, SessionStatus.EXPIRED, SessionStatus.LOST, SessionStatus.FAILED}


def _together(calls: list[Callable[[], Any]], timeout: float = 30.0) -> list[Any]:
    """Run every call in its own thread, all released at once; return results or errors."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads), "a racer is stuck"
    return results


def _assert_torn_down_once(
    session_id: str, container_id: str | None, runtime: FakeRuntime, hooks: Hooks
) -> None:
    assert hooks.count("stop", session_id) == 1
    assert hooks.count("end", session_id) == 1
    if container_id is not None:
        assert runtime.removed[container_id] == 1
    assert runtime.discarded[session_id] == 1


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_enders_tear_a_session_down_once(
    round_: int,
    service: SessionService,
    make_service: Callable[..., SessionService],
    runtime: FakeRuntime,
    hooks: Hooks,
    clock: Clock,
) -> None:
    """DELETEs in two processes, reapers and reconciler-style ends all at once."""
    other = make_service("w2")
    row = service.create(SessionRequest(user_id="alice", ttl_minutes=10)).session
    clock.advance(minutes=11)  # expired, so every reaper wants it too
    calls: list[Callable[[], Any]] = []
    for i in range(8):
        owner = service if i % 2 else other
        calls.append(partial(owner.end, row.id, SessionStatus.DELETED, "delete", wait=True))
        calls.append(Reaper(owner).sweep)
        calls.append(
            partial(owner.end, row.id, SessionStatus.LOST, "lost", seen_version=row.version)
        )
    results = _together(calls)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    final = service.get(row.id)
    assert final.status in {SessionStatus.DELETED, SessionStatus.EXPIRED, SessionStatus.LOST}
    waited = results[0::3]  # the DELETEs waited for the winner's teardown
    assert all(isinstance(r, SessionRow) and r.status == final.status for r in waited)
    _assert_torn_down_once(row.id, row.container_id, runtime, hooks)
    assert leftovers(service.db, runtime, row.id) == []


def test_end_all_racing_with_individual_ends_tears_each_down_once(
    service: SessionService,
    make_service: Callable[..., SessionService],
    runtime: FakeRuntime,
    hooks: Hooks,
) -> None:
    """Two DELETE /sessions and a DELETE per session per process, all at once."""
    other = make_service("w2")
    rows = [service.create(SessionRequest(user_id=f"user{i}")).session for i in range(7)]
    calls: list[Callable[[], Any]] = [
        lambda: service.end_all("delete all", concurrency=4),
        lambda: other.end_all("delete all", concurrency=4),
    ]
    for row in rows:
        for owner in (service, other):
            calls.append(partial(owner.end, row.id, SessionStatus.DELETED, "one"))
    results = _together(calls)
    assert [r for r in results if isinstance(r, BaseException)] == []
    for listed in results[:2]:  # each end_all waited for every session to end
        assert listed and all(r.status not in ACTIVE_STATUSES for r in listed)
    for row in rows:
        assert service.get(row.id).status == SessionStatus.DELETED
        _assert_torn_down_once(row.id, row.container_id, runtime, hooks)
        assert leftovers(service.db, runtime, row.id) == []
    assert service.list_sessions("active") == []
    assert claim_rows(service.db) == (0, 0)
    assert runtime.containers == {}


def _create_held(
    service: SessionService, runtime: FakeRuntime
) -> tuple[threading.Thread, list[BaseException | CreatedSession]]:
    """Create alice's session in a thread, held inside the runtime's start."""
    runtime.start_gate = threading.Event()
    outcome: list[BaseException | CreatedSession] = []

    def create() -> None:
        try:
            outcome.append(service.create(SessionRequest(user_id="alice")))
        except BaseException as exc:
            outcome.append(exc)

    creator = threading.Thread(target=create)
    creator.start()
    assert wait_until(lambda: runtime.calls["start"] == 1)
    return creator, outcome


def test_delete_while_start_is_blocked_leaves_nothing_running(
    service: SessionService, runtime: FakeRuntime, hooks: Hooks
) -> None:
    """DELETEs while the runtime is still starting the container: the session ends
    ``deleted``, the container started afterwards is removed, the claims are freed."""
    creator, outcome = _create_held(service, runtime)
    (row,) = service.list_sessions("active")
    assert row.status == SessionStatus.STARTING and service.is_busy(row.id)
    results = _together(
        [lambda: service.end(row.id, SessionStatus.DELETED, "delete", wait=True)] * 16
    )
    assert all(isinstance(r, SessionRow) and r.status == SessionStatus.DELETED for r in results)
    assert claim_rows(service.db, row.id) == (0, 0)  # freed before the start returns
    runtime.start_gate.set()
    creator.join(10)
    assert not creator.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], Conflict)
    final = service.get(row.id)
    assert final.status == SessionStatus.DELETED and final.end_reason == "delete"
    assert runtime.containers == {}  # the container started late was removed
    assert runtime.calls["remove"] >= 1
    assert hooks.count("stop", row.id) == 1 and hooks.count("end", row.id) == 1
    assert hooks.count("start", row.id) == 0
    assert leftovers(service.db, runtime, row.id) == []
    assert not service.is_busy(row.id)


@pytest.mark.parametrize("round_", range(4))
def test_delete_racing_the_release_of_a_start_leaves_nothing_running(
    round_: int, service: SessionService, runtime: FakeRuntime, hooks: Hooks
) -> None:
    """Whichever comes first, the start's release or the DELETEs, the end state is one."""
    creator, outcome = _create_held(service, runtime)
    (row,) = service.list_sessions("active")
    gate = runtime.start_gate
    calls: list[Callable[[], Any]] = [gate.set]
    calls += [lambda: service.end(row.id, SessionStatus.DELETED, "delete", wait=True)] * 15
    results = _together(calls)
    creator.join(10)
    assert not creator.is_alive()
    assert all(isinstance(r, SessionRow) for r in results[1:]), results
    assert len(outcome) == 1
    assert isinstance(outcome[0], CreatedSession | Conflict | RuntimeFailure), outcome
    final = service.get(row.id)
    assert final.status == SessionStatus.DELETED
    assert runtime.containers == {}
    assert hooks.count("stop", row.id) == 1 and hooks.count("end", row.id) == 1
    assert leftovers(service.db, runtime, row.id) == []


@pytest.mark.parametrize("round_", range(3))
def test_finish_abandoned_racing_with_end_tears_down_once(
    round_: int,
    service: SessionService,
    make_service: Callable[..., SessionService],
    runtime: FakeRuntime,
    hooks: Hooks,
) -> None:
    """A dead worker's ``starting`` session: reconcilers and DELETEs of two live workers."""
    reservation = service.reserve(SessionRequest(user_id="alice"))  # w1 dies right here
    session_id = reservation.session.id
    deleter, reconciler = make_service("w2"), make_service("w3")
    reason = "Sandman stopped while the session was changing state"
    calls: list[Callable[[], Any]] = []
    for _ in range(8):
        calls.append(lambda: reconciler.finish_abandoned(session_id, "w1", reason))
        calls.append(lambda: deleter.end(session_id, SessionStatus.DELETED, "delete"))
    results = _together(calls)
    assert [r for r in results if isinstance(r, BaseException)] == []
    took_over = [r for r in results[0::2] if r is True]
    assert len(took_over) <= 1
    final = service.get(session_id)
    assert final.status in ENDED
    if took_over:
        assert (final.status, final.end_reason) == (SessionStatus.FAILED, reason)
        assert final.worker_id == "w3"
    else:
        assert (final.status, final.end_reason) == (SessionStatus.DELETED, "delete")
        assert final.worker_id == "w2"
    _assert_torn_down_once(session_id, None, runtime, hooks)
    assert leftovers(service.db, runtime, session_id) == []
