"""SessionService over a fake runtime: creation, its failure paths, end, extend, paging.

Every way creation can fail must leave nothing behind: no GPU or port claim,
no container, the runtime's files discarded, and a ``failed`` row that says why.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from tests.fakes.runtime import FakeRuntime
from tests.unit.services.conftest import (
    Clock,
    Hooks,
    claim_rows,
    containers_of,
    fake_launch,
    leftovers,
)

from sandman.config import Settings
from sandman.domain import SessionStatus
from sandman.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    RuntimeFailure,
    RuntimeUnavailable,
    SessionConflict,
)
from sandman.gpu.inventory import make_inventory
from sandman.gpu.types import GpuInventory
from sandman.runtime.base import DEPLOYMENT_LABEL, SESSION_LABEL, SSHD_PORT
from sandman.services.reconciler import Reconciler
from sandman.services.requests import SessionRequest
from sandman.services.sessions import SessionService
from sandman.store.database import Database
from sandman.store.models import GpuClaim, PortClaim, User
from sandman.store.models import Session as SessionRow
from sandman.store.transitions import transition

ABANDONED = "Sandman stopped while the session was changing state"


def _only_session(service: SessionService, user_id: str) -> SessionRow:
    rows = service.list_sessions("all", user_id=user_id)
    assert len(rows) == 1, rows
    return rows[0]


def _instances(inventory: GpuInventory) -> set[str]:
    return {i.uuid for d in inventory.devices() for i in d.instances}


def _assert_failed_cleanly(
    service: SessionService, runtime: FakeRuntime, hooks: Hooks, user_id: str, why: str
) -> SessionRow:
    """The session failed with ``why`` in its reason and holds nothing any more."""
    row = _only_session(service, user_id)
    assert row.status == SessionStatus.FAILED
    assert row.end_reason is not None and row.end_reason.startswith("creation failed: ")
    assert why in row.end_reason
    assert row.ended_at == service.clock()
    assert leftovers(service.db, runtime, row.id) == []
    assert [c for c in runtime.running() if c.labels.get(DEPLOYMENT_LABEL) == "dep"] == []
    assert hooks.count("end", row.id) == 1
    assert hooks.count("start", row.id) == 0
    assert not service.is_busy(row.id)
    return row


# ------------------------------------------------------------------ creation
def test_create_runs_the_session_and_records_its_endpoint_and_claims(
    service: SessionService, runtime: FakeRuntime, hooks: Hooks, clock: Clock
) -> None:
    """A created session is running, reachable where the row says, and holds its grants."""
    created = service.create(SessionRequest(user_id="alice", ttl_minutes=30))
    row = service.get(created.session.id)
    assert row.status == SessionStatus.RUNNING
    assert created.private_key is not None  # no key given: one was generated
    assert row.container_id is not None
    container = runtime.inspect(row.container_id)
    assert container is not None and container.running
    assert container.labels[SESSION_LABEL] == row.id
    assert container.labels[DEPLOYMENT_LABEL] == "dep"
    assert (row.endpoint_host, row.endpoint_port) == (container.name, SSHD_PORT)
    assert row.container_ip == "10.88.0.2"
    assert row.host_public_key is not None and row.host_public_key.startswith("ssh-ed25519 ")
    assert row.started_at == clock() and row.expires_at == clock() + timedelta(minutes=30)
    assert row.worker_id == "w1"
    # one MIG slice of the simulated GPU and one host port, both recorded
    assert row.mig_instance_uuid in _instances(service.inventory)
    assert row.gpu_uuid == row.mig_instance_uuid
    with service.db.read() as db:
        gpu_claims = list(db.scalars(select(GpuClaim)))
        ports = list(db.scalars(select(PortClaim)))
    assert gpu_claims and {c.session_id for c in gpu_claims} == {row.id}
    assert {c.instance_uuid for c in gpu_claims} == {row.mig_instance_uuid}
    assert [(p.port, p.session_id) for p in ports] == [(row.ssh_port, row.id)]
    assert 41000 <= (row.ssh_port or 0) <= 41999
    assert hooks.count("start", row.id) == 1 and hooks.count("end", row.id) == 0
    assert not service.is_busy(row.id)
    assert service.counts_by_status() == {"running": 1}


def test_a_second_active_session_for_a_user_is_refused(service: SessionService) -> None:
    """One active session per user; the refusal writes nothing."""
    service.create(SessionRequest(user_id="alice"))
    with pytest.raises(SessionConflict):
        service.create(SessionRequest(user_id="alice"))
    assert len(service.list_sessions("all")) == 1
    assert claim_rows(service.db) == (1, 1)


def test_unreachable_engine_is_refused_before_anything_is_written(
    service: SessionService, runtime: FakeRuntime
) -> None:
    """When the runtime does not answer its ping, no row, user or claim exists afterwards."""
    runtime.unreachable = True
    with pytest.raises(RuntimeUnavailable):
        service.create(SessionRequest(user_id="alice"))
    with service.db.read() as db:
        for table in (SessionRow, User, GpuClaim, PortClaim):
            assert db.scalar(select(func.count()).select_from(table)) == 0, table
    assert runtime.calls["ping"] == 1 and runtime.calls["start"] == 0
    assert runtime.containers == {}


def test_start_failure_gives_everything_back(
    service: SessionService, runtime: FakeRuntime, hooks: Hooks
) -> None:
    """The runtime refusing to start: failed with its message, nothing held."""
    runtime.start_error = RuntimeFailure("pull access denied for the image")
    with pytest.raises(RuntimeFailure, match="pull access denied"):
        service.create(SessionRequest(user_id="alice"))
    row = _assert_failed_cleanly(service, runtime, hooks, "alice", "pull access denied")
    assert row.container_id is None
    # the user may try again at once: the failed row is not active
    runtime.start_error = None
    assert service.create(SessionRequest(user_id="alice")).session.status == "running"


def test_sshd_that_never_answers_times_out_and_gives_everything_back(
    service: SessionService, runtime: FakeRuntime, hooks: Hooks, settings: Settings
) -> None:
    """A start that hangs past start_timeout: the running container is removed too."""
    service.settings = settings.model_copy(update={"start_timeout": 0.3})
    runtime.sshd_answers = False
    with pytest.raises(RuntimeFailure, match="did not answer"):
        service.create(SessionRequest(user_id="alice"))
    row = _assert_failed_cleanly(service, runtime, hooks, "alice", "did not answer")
    assert row.container_id is not None
    assert runtime.removed[row.container_id] == 1
    assert runtime.containers == {}


def test_container_dying_while_starting_gives_everything_back(
    service: SessionService, runtime: FakeRuntime, hooks: Hooks
) -> None:
    """The container exits before sshd answers: failed with its exit code, removed."""

    def probe(host: str, port: int) -> bool:
        if runtime.running():
            runtime.kill(host, exit_code=3)
        return runtime.probe(host, port)

    service.probe = probe
    with pytest.raises(RuntimeFailure, match="exited"):
        service.create(SessionRequest(user_id="alice"))
    row = _assert_failed_cleanly(service, runtime, hooks, "alice", "code 3")
    assert row.container_id is not None
    assert runtime.removed[row.container_id] == 1  # an exited container is removed as well
    assert runtime.containers == {}


def test_container_vanishing_while_starting_gives_everything_back(
    service: SessionService, runtime: FakeRuntime, hooks: Hooks
) -> None:
    """The container disappears before sshd answers: failed, and its claims are freed."""
    runtime.sshd_answers = False

    def probe(host: str, port: int) -> bool:
        if containers_of(runtime, _only_session(service, "alice").id):
            runtime.vanish(host)
        return runtime.probe(host, port)

    service.probe = probe
    with pytest.raises(RuntimeFailure, match="vanished"):
        service.create(SessionRequest(user_id="alice"))
    _assert_failed_cleanly(service, runtime, hooks, "alice", "vanished while starting")


def test_a_foreign_container_with_the_name_fails_creation_and_is_left_alone(
    service: SessionService, runtime: FakeRuntime, hooks: Hooks
) -> None:
    """A container Sandman does not manage is never removed; the session fails cleanly."""
    foreign = runtime.start(fake_launch("sandman-alice", {"owner": "someone"}))
    with pytest.raises(RuntimeFailure, match="not managed by this Sandman"):
        service.create(SessionRequest(user_id="alice"))
    _assert_failed_cleanly(service, runtime, hooks, "alice", "not managed")
    assert runtime.inspect(foreign.id) == foreign


def test_a_stale_container_of_an_old_session_is_replaced(
    service: SessionService, runtime: FakeRuntime
) -> None:
    """A leftover container of this deployment with the session's name is removed first."""
    stale = runtime.start(
        fake_launch("sandman-alice", {DEPLOYMENT_LABEL: "dep", SESSION_LABEL: "old"})
    )
    created = service.create(SessionRequest(user_id="alice"))
    assert created.session.status == SessionStatus.RUNNING
    assert runtime.removed[stale.id] == 1
    assert [c.labels[SESSION_LABEL] for c in runtime.running()] == [created.session.id]


def test_failure_after_creating_a_mig_instance_destroys_it(
    tmp_path: Path,
    make_service: Callable[..., SessionService],
    runtime: FakeRuntime,
    hooks: Hooks,
) -> None:
    """On a GPU whose instances are made on demand, a failed start leaves no instance."""
    inventory = make_inventory(
        "simulated", topology="a100-40gb-x1", state_path=tmp_path / "dyn.json", seed="d"
    )
    service = make_service("w1", inventory=inventory)
    assert _instances(inventory) == set()
    runtime.sshd_answers = False

    def probe(host: str, port: int) -> bool:
        assert len(_instances(inventory)) == 1  # created before the container started
        runtime.kill(host)
        return False

    service.probe = probe
    with pytest.raises(RuntimeFailure):
        service.create(SessionRequest(user_id="alice"))
    row = _assert_failed_cleanly(service, runtime, hooks, "alice", "code 137")
    assert row.mig_profile == "1g.5gb"
    assert _instances(inventory) == set()


def test_a_process_killed_between_reserve_and_launch_is_finished_by_another(
    service: SessionService,
    make_service: Callable[..., SessionService],
    runtime: FakeRuntime,
    hooks: Hooks,
) -> None:
    """A ``starting`` row of a dead worker is failed by another process's reconciler."""
    reservation = service.reserve(SessionRequest(user_id="alice"))
    session_id = reservation.session.id
    assert claim_rows(service.db, session_id) == (1, 1)  # held, with nothing started
    # w1 is never launched and never registered: to w2 it is a dead process
    other = make_service("w2")
    report = Reconciler(other, stale_after=1, grace=0, hostname="other-host").run_once()
    assert not report.skipped
    assert report.abandoned_sessions == [session_id]
    row = other.get(session_id)
    assert row.status == SessionStatus.FAILED
    assert row.end_reason == ABANDONED
    assert row.worker_id == "w2"
    assert leftovers(service.db, runtime, session_id) == []
    assert hooks.count("end", session_id) == 1
    assert runtime.calls["start"] == 0
    # a second pass finds nothing more to do
    again = Reconciler(other, stale_after=1, grace=0, hostname="other-host").run_once()
    assert again.abandoned_sessions == [] and hooks.count("end", session_id) == 1


def test_a_live_worker_keeps_its_starting_session_until_its_heartbeat_is_stale(
    service: SessionService,
    make_service: Callable[..., SessionService],
    runtime: FakeRuntime,
    clock: Clock,
) -> None:
    """Only a worker whose heartbeat is older than stale_after is treated as dead."""
    Reconciler(service, stale_after=10, grace=0, hostname="host-a").heartbeat()  # w1 lives
    session_id = service.reserve(SessionRequest(user_id="alice")).session.id
    reconciler = Reconciler(make_service("w2"), stale_after=10, grace=0, hostname="host-b")
    clock.advance(seconds=5)
    assert reconciler.run_once().abandoned_sessions == []
    assert service.get(session_id).status == SessionStatus.STARTING
    assert claim_rows(service.db, session_id) == (1, 1)
    clock.advance(seconds=6)  # w1's heartbeat is now 11 s old
    assert reconciler.run_once().abandoned_sessions == [session_id]
    assert service.get(session_id).status == SessionStatus.FAILED
    assert leftovers(service.db, runtime, session_id) == []


def test_a_half_ended_session_of_a_dead_worker_ends_as_it_was_meant_to(
    service: SessionService,
    make_service: Callable[..., SessionService],
    runtime: FakeRuntime,
) -> None:
    """A ``stopping`` row left by a dead worker is finished with its intended status."""
    row = service.create(SessionRequest(user_id="alice")).session
    with service.db.transaction() as db:  # w1 died right after claiming the teardown
        assert transition(
            db,
            row.id,
            [SessionStatus.RUNNING],
            SessionStatus.STOPPING,
            stop_status=SessionStatus.DELETED.value,
            end_reason="deleted by the user",
        )
    other = make_service("w2")
    report = Reconciler(other, stale_after=1, grace=0, hostname="other-host").run_once()
    assert report.abandoned_sessions == [row.id]
    ended = other.get(row.id)
    assert ended.status == SessionStatus.DELETED
    assert ended.end_reason == "deleted by the user"
    assert row.container_id is not None and runtime.removed[row.container_id] == 1
    assert leftovers(service.db, runtime, row.id) == []


def test_finish_abandoned_takes_only_what_the_dead_worker_still_owns(
    service: SessionService,
    make_service: Callable[..., SessionService],
    runtime: FakeRuntime,
    hooks: Hooks,
) -> None:
    """A session another live worker is ending, or that another worker owns, is not taken."""
    reconciler = make_service("w3")
    running = service.create(SessionRequest(user_id="bob")).session
    assert not reconciler.finish_abandoned(running.id, "w9", ABANDONED)  # w9 never owned it
    assert service.get(running.id).status == SessionStatus.RUNNING

    session_id = service.reserve(SessionRequest(user_id="alice")).session.id  # w1 dies
    deleter = make_service("w2")
    during: list[bool] = []

    def take_over_mid_teardown(user_id: str, ended_id: str, reason: str) -> None:
        if ended_id == session_id:  # w2 owns the teardown now; w1 is still "dead"
            during.append(reconciler.finish_abandoned(session_id, "w1", ABANDONED))

    deleter.stop_hooks.append(take_over_mid_teardown)
    ended = deleter.end(session_id, SessionStatus.DELETED, "delete")
    assert during == [False]
    assert (ended.status, ended.end_reason, ended.worker_id) == ("deleted", "delete", "w2")
    assert hooks.count("stop", session_id) == 1 and hooks.count("end", session_id) == 1
    assert leftovers(service.db, runtime, session_id) == []
    assert not reconciler.finish_abandoned(session_id, "w1", ABANDONED)  # ended: nothing to do


# ------------------------------------------------------------------- ending
def test_end_is_idempotent(
    service: SessionService, runtime: FakeRuntime, hooks: Hooks, clock: Clock
) -> None:
    """A second end changes nothing: same status, reason and end time; one teardown."""
    row = service.create(SessionRequest(user_id="alice")).session
    clock.advance(minutes=1)
    first = service.end(row.id, SessionStatus.DELETED, "deleted by the user")
    assert first.status == SessionStatus.DELETED and first.ended_at == clock()
    clock.advance(minutes=1)
    second = service.end(row.id, SessionStatus.EXPIRED, "TTL expired")
    third = service.end(row.id, SessionStatus.LOST, "gone", wait=True)
    for again in (second, third):
        assert again.status == SessionStatus.DELETED
        assert again.end_reason == "deleted by the user"
        assert again.ended_at == first.ended_at
        assert again.version == first.version
    assert row.container_id is not None and runtime.removed[row.container_id] == 1
    assert leftovers(service.db, runtime, row.id) == []
    assert hooks.count("stop", row.id) == 1 and hooks.count("end", row.id) == 1
    with pytest.raises(NotFound):
        service.end("no-such-session", SessionStatus.DELETED, "x")


def test_end_with_a_stale_version_changes_nothing(
    service: SessionService, runtime: FakeRuntime
) -> None:
    """``seen_version`` makes the end conditional on the row being unchanged."""
    row = service.create(SessionRequest(user_id="alice")).session
    service.extend(row.id, 90)  # bumps the version
    kept = service.end(row.id, SessionStatus.LOST, "stale evidence", seen_version=row.version)
    assert kept.status == SessionStatus.RUNNING
    assert claim_rows(service.db, row.id) == (1, 1) and runtime.discarded[row.id] == 0
    ended = service.end(row.id, SessionStatus.LOST, "fresh", seen_version=kept.version)
    assert ended.status == SessionStatus.LOST and ended.end_reason == "fresh"


def test_extend_moves_the_expiry_of_an_active_session_only(
    service: SessionService, clock: Clock
) -> None:
    """Extending counts from now; an ended session cannot be extended."""
    row = service.create(SessionRequest(user_id="alice", ttl_minutes=10)).session
    clock.advance(minutes=5)
    extended = service.extend(row.id, 120)
    assert extended.ttl_minutes == 120
    assert extended.expires_at == clock() + timedelta(minutes=120)
    assert extended.version > row.version
    with pytest.raises(InvalidRequest):
        service.extend(row.id, 0)
    with pytest.raises(NotFound):
        service.extend("no-such-session", 10)
    service.end(row.id, SessionStatus.DELETED, "done")
    with pytest.raises(Conflict, match="deleted"):
        service.extend(row.id, 10)
    assert service.get(row.id).expires_at == extended.expires_at


# ------------------------------------------------------------------- paging
def _insert_sessions(db: Database, service: SessionService, clock: Clock) -> None:
    """Rows whose id order, insertion order and creation order all differ."""
    t0 = clock()
    spec = [  # (id, minutes after t0, status)
        ("e", 0, "deleted"),
        ("b", 1, "deleted"),
        ("d", 0, "expired"),
        ("a", 2, "running"),
        ("c", 1, "running"),
    ]
    with db.transaction() as s:
        for session_id, minutes, status in spec:
            user = f"user-{session_id}"
            service.ensure_user(s, user)
            created = t0 + timedelta(minutes=minutes)
            s.add(
                SessionRow(
                    id=session_id,
                    user_id=user,
                    status=status,
                    image="sandman-workspace:latest",
                    container_name=f"sandman-{user}",
                    cpus=1.0,
                    memory="1g",
                    ttl_minutes=60,
                    created_at=created,
                    expires_at=created + timedelta(minutes=60),
                    version=0,
                )
            )


def test_page_orders_by_creation_then_id_and_counts_all_matches(
    service: SessionService, db: Database, clock: Clock
) -> None:
    """Paging is stable (created_at, id) and the total ignores limit and offset."""
    _insert_sessions(db, service, clock)

    def ids(
        status: str = "all", limit: int | None = None, offset: int = 0
    ) -> tuple[list[str], int]:
        rows, total = service.page(status, limit=limit, offset=offset)
        return [r.id for r in rows], total

    assert ids() == (["d", "e", "b", "c", "a"], 5)
    assert ids(limit=2) == (["d", "e"], 5)
    assert ids(limit=2, offset=2) == (["b", "c"], 5)
    assert ids(offset=4) == (["a"], 5)
    assert ids(limit=2, offset=10) == ([], 5)
    assert ids("active") == (["c", "a"], 2)
    assert ids("running", limit=1) == (["c"], 2)
    assert ids("deleted", offset=1) == (["b"], 2)
    rows, total = service.page("all", user_id="user-b")
    assert [r.id for r in rows] == ["b"] and total == 1
    assert [r.id for r in service.list_sessions()] == ["c", "a"]
    with pytest.raises(InvalidRequest, match="unknown status"):
        service.page("bogus")
