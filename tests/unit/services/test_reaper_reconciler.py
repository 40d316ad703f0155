"""The reaper and the reconciler over a fake runtime, with time moved by hand.

The reaper ends what has expired and nothing else; the reconciler ends sessions
whose container is gone or dead, but never on evidence older than the row, never
within the grace period and never while another process holds its lease.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from tests.fakes.runtime import FakeRuntime
from tests.unit.services.conftest import Clock, Hooks, claim_rows, fake_launch, leftovers

from sandman.domain import SessionStatus
from sandman.errors import RuntimeUnavailable
from sandman.gpu.inventory import make_inventory
from sandman.runtime.base import DEPLOYMENT_LABEL, SESSION_LABEL, ContainerState
from sandman.services.reaper import Reaper
from sandman.services.reconciler import LEASE, Reconciler, container_verdict
from sandman.services.requests import SessionRequest
from sandman.services.sessions import SessionService
from sandman.store.models import Lease
from sandman.store.models import Session as SessionRow


def _running(service: SessionService, user_id: str, ttl: int = 60) -> SessionRow:
    row = service.create(SessionRequest(user_id=user_id, ttl_minutes=ttl)).session
    assert row.status == SessionStatus.RUNNING and row.container_id is not None
    return row


def _reconciler(service: SessionService, grace: float = 0.0) -> Reconciler:
    return Reconciler(service, stale_after=60, grace=grace, hostname="host-a")


# -------------------------------------------------------------------- reaper
def test_reaper_ends_only_expired_sessions(
    service: SessionService, runtime: FakeRuntime, clock: Clock, hooks: Hooks
) -> None:
    """Each session ends once its own TTL has run out, not before and not another's."""
    short = _running(service, "alice", ttl=10)
    long = _running(service, "bob", ttl=60)
    reaper = Reaper(service)
    clock.advance(minutes=9, seconds=59)
    assert reaper.sweep() == []
    clock.advance(seconds=1)  # exactly at expires_at
    assert reaper.sweep() == [short.id]
    ended = service.get(short.id)
    assert ended.status == SessionStatus.EXPIRED
    assert ended.end_reason is not None and "TTL of 10 min expired" in ended.end_reason
    assert leftovers(service.db, runtime, short.id) == []
    assert service.get(long.id).status == SessionStatus.RUNNING
    assert claim_rows(service.db, long.id) == (1, 1)
    assert reaper.sweep() == []  # nothing left to reap yet
    clock.advance(minutes=50)
    assert reaper.sweep() == [long.id]
    assert service.get(long.id).status == SessionStatus.EXPIRED
    assert hooks.count("end", short.id) == 1 and hooks.count("end", long.id) == 1


def test_reaper_leaves_a_session_this_process_is_still_creating(
    service: SessionService, clock: Clock
) -> None:
    """An expired but still-starting session of this process is not pulled from under it."""
    reservation = service.reserve(SessionRequest(user_id="alice", ttl_minutes=1))
    clock.advance(minutes=2)
    assert Reaper(service).sweep() == []
    assert service.get(reservation.session.id).status == SessionStatus.STARTING
    service.launch(reservation)
    assert Reaper(service).sweep() == [reservation.session.id]
    assert service.get(reservation.session.id).status == SessionStatus.EXPIRED


# ---------------------------------------------------------------- reconciler
def test_a_vanished_container_makes_its_session_lost(
    service: SessionService, runtime: FakeRuntime, hooks: Hooks
) -> None:
    row = _running(service, "alice")
    runtime.vanish(row.container_id or "")
    report = _reconciler(service).run_once()
    assert report.ended_sessions == [row.id] and report.errors == []
    ended = service.get(row.id)
    assert ended.status == SessionStatus.LOST
    assert ended.end_reason == "the session's container vanished"
    assert leftovers(service.db, runtime, row.id) == []
    assert hooks.count("end", row.id) == 1


def test_a_killed_container_makes_its_session_lost_with_the_exit_code(
    service: SessionService, runtime: FakeRuntime
) -> None:
    row = _running(service, "alice")
    other = _running(service, "bob")
    runtime.kill(row.container_id or "", exit_code=42)
    report = _reconciler(service).run_once()
    assert report.ended_sessions == [row.id]
    ended = service.get(row.id)
    assert ended.status == SessionStatus.LOST
    assert ended.end_reason is not None and "exit code 42" in ended.end_reason
    assert runtime.removed[row.container_id or ""] == 1  # the dead container is removed
    assert leftovers(service.db, runtime, row.id) == []
    assert service.get(other.id).status == SessionStatus.RUNNING


def test_a_healthy_session_is_left_alone(service: SessionService, runtime: FakeRuntime) -> None:
    row = _running(service, "alice")
    report = _reconciler(service).run_once()
    assert report.ended_sessions == [] and report.removed_containers == []
    assert service.get(row.id).status == SessionStatus.RUNNING
    assert runtime.inspect(row.container_id or "") is not None


def test_a_session_younger_than_the_grace_period_is_left_alone(
    service: SessionService, runtime: FakeRuntime, clock: Clock
) -> None:
    """Within ``grace`` of its start a session is not judged; after it, it is."""
    row = _running(service, "alice")
    runtime.vanish(row.container_id or "")
    reconciler = _reconciler(service, grace=30)
    clock.advance(seconds=5)
    assert reconciler.run_once().ended_sessions == []
    assert service.get(row.id).status == SessionStatus.RUNNING
    clock.advance(seconds=24)
    assert reconciler.run_once().ended_sessions == []
    clock.advance(seconds=1)  # 30 s after the start
    assert reconciler.run_once().ended_sessions == [row.id]
    assert service.get(row.id).status == SessionStatus.LOST
    assert leftovers(service.db, runtime, row.id) == []


def test_a_container_without_an_active_session_is_removed(
    service: SessionService, runtime: FakeRuntime
) -> None:
    """Orphans of this deployment go; other deployments' and live sessions' stay."""
    live = _running(service, "alice")
    ended = _running(service, "bob")
    service.end(ended.id, SessionStatus.DELETED, "done")
    orphan = runtime.start(
        fake_launch("sandman-carol", {DEPLOYMENT_LABEL: "dep", SESSION_LABEL: ended.id})
    )
    unknown = runtime.start(
        fake_launch("sandman-dave", {DEPLOYMENT_LABEL: "dep", SESSION_LABEL: "never-existed"})
    )
    foreign = runtime.start(
        fake_launch("sandman-erin", {DEPLOYMENT_LABEL: "other", SESSION_LABEL: "x"})
    )
    report = _reconciler(service).run_once()
    assert sorted(report.removed_containers) == ["sandman-carol", "sandman-dave"]
    assert runtime.removed[orphan.id] == 1 and runtime.removed[unknown.id] == 1
    assert runtime.inspect(foreign.id) is not None
    assert runtime.inspect(live.container_id or "") is not None
    assert service.get(live.id).status == SessionStatus.RUNNING


def test_the_reconciler_skips_while_another_process_holds_its_lease(
    service: SessionService, runtime: FakeRuntime, clock: Clock
) -> None:
    """One reconciler at a time: a live lease of another holder means no work this pass."""
    row = _running(service, "alice")
    runtime.vanish(row.container_id or "")
    with service.db.transaction() as db:
        db.add(Lease(name=LEASE, holder="w9", expires_at=clock() + timedelta(seconds=60)))
    lists_before = runtime.calls["list"]
    reconciler = _reconciler(service)
    report = reconciler.run_once()
    assert report.skipped
    assert report.ended_sessions == []
    assert runtime.calls["list"] == lists_before  # it did not even look
    assert service.get(row.id).status == SessionStatus.RUNNING
    clock.advance(seconds=61)  # the other holder's lease has run out
    report = reconciler.run_once()
    assert not report.skipped and report.ended_sessions == [row.id]
    with service.db.read() as db:
        lease = db.get_one(Lease, LEASE)
    assert lease.holder == "w1"


def test_container_verdict_ignores_another_sessions_container(
    service: SessionService,
) -> None:
    """A container of the right name but another session's label means the session's is gone."""
    row = _running(service, "alice")
    mine = service.runtime.inspect(row.container_id or "")
    assert mine is not None
    assert container_verdict(row, mine) is None
    other = replace(mine, labels={**mine.labels, SESSION_LABEL: "another"})
    assert container_verdict(row, other) == "the session's container vanished"
    assert container_verdict(row, None) == "the session's container vanished"
    dead = replace(mine, running=False, status="exited", exit_code=9)
    assert container_verdict(row, dead) == "the session's container is exited (exit code 9)"


class StaleListRuntime(FakeRuntime):
    """A runtime whose listing is older than the truth: it reports every container dead."""

    def list(self, labels: dict[str, str]) -> list[ContainerState]:
        return [
            replace(state, running=False, status="exited", exit_code=137)
            for state in super().list(labels)
        ]


def test_dead_evidence_older_than_the_row_does_not_end_the_session(
    make_service: Callable[..., SessionService],
) -> None:
    """The listing says dead but a fresh inspect says running: the session stays."""
    runtime = StaleListRuntime(publishes_ports=True)
    service = make_service("w1", runtime=runtime)
    row = _running(service, "alice")
    assert runtime.list({DEPLOYMENT_LABEL: "dep"})[0].running is False
    report = _reconciler(service).run_once()
    assert report.ended_sessions == [] and report.removed_containers == []
    current = service.get(row.id)
    assert current.status == SessionStatus.RUNNING
    assert current.version == row.version
    assert runtime.inspect(row.container_id or "") is not None
    assert runtime.discarded[row.id] == 0


class ExtendWhileListing(FakeRuntime):
    """The session's row changes (an extend) after the reconciler has read it."""

    def __init__(self) -> None:
        super().__init__(publishes_ports=True)
        self.on_list: Callable[[], object] | None = None

    def list(self, labels: dict[str, str]) -> list[ContainerState]:
        if self.on_list is not None:
            self.on_list()
        return super().list(labels)


def test_a_row_changed_since_it_was_read_is_left_for_the_next_pass(
    make_service: Callable[..., SessionService],
) -> None:
    """The end is a compare-and-set on the version read first; a newer row wins this pass."""
    runtime = ExtendWhileListing()
    service = make_service("w1", runtime=runtime)
    row = _running(service, "alice")
    runtime.kill(row.container_id or "")
    runtime.on_list = lambda: service.extend(row.id, 120)
    reconciler = _reconciler(service)
    assert reconciler.run_once().ended_sessions == []
    assert service.get(row.id).status == SessionStatus.RUNNING
    runtime.on_list = None
    assert reconciler.run_once().ended_sessions == [row.id]
    assert service.get(row.id).status == SessionStatus.LOST


def test_a_vanished_mig_instance_makes_its_session_lost_and_orphans_are_destroyed(
    tmp_path: Path, make_service: Callable[..., SessionService], runtime: FakeRuntime
) -> None:
    """GPU drift: a session's created instance gone means lost; an unclaimed one goes."""
    inventory = make_inventory(
        "simulated", topology="a100-40gb-x1", state_path=tmp_path / "dyn.json", seed="d"
    )
    service = make_service("w1", inventory=inventory)
    row = _running(service, "alice")
    gpu = inventory.devices()[0]
    assert row.mig_instance_uuid is None and row.gpu_uuid is not None
    (instance,) = gpu.instances
    assert instance.uuid == row.gpu_uuid
    inventory.destroy_instance(gpu.uuid, instance.uuid)
    # an instance no claim covers (away from the slices the lost session still claims)
    orphan = inventory.create_instance(gpu.uuid, "1g.5gb", 0 if instance.start else 6)
    report = _reconciler(service).run_once()
    assert report.ended_sessions == [row.id]
    assert report.destroyed_instances == [orphan.uuid]
    ended = service.get(row.id)
    assert ended.status == SessionStatus.LOST
    assert ended.end_reason == "the session's MIG instance vanished"
    assert leftovers(service.db, runtime, row.id) == []
    assert inventory.devices()[0].instances == ()


def test_a_teardown_interrupted_by_the_engine_is_finished_once_it_answers(
    service: SessionService, runtime: FakeRuntime
) -> None:
    """After a transient engine outage, the retried DELETE itself finishes the teardown."""
    row = _running(service, "alice")
    runtime.unreachable = True
    with contextlib.suppress(RuntimeUnavailable):
        service.end(row.id, SessionStatus.DELETED, "deleted by the user")
    runtime.unreachable = False
    ended = service.end(row.id, SessionStatus.DELETED, "deleted by the user")  # retried
    assert ended.status == SessionStatus.DELETED  # the retry itself finished the teardown
    assert leftovers(service.db, runtime, row.id) == []


def test_the_reconciler_finishes_a_teardown_of_ours_that_failed_half_way(
    service: SessionService, runtime: FakeRuntime
) -> None:
    row = _running(service, "alice")
    runtime.unreachable = True
    with contextlib.suppress(RuntimeUnavailable):
        service.end(row.id, SessionStatus.EXPIRED, "TTL expired")
    assert service.get(row.id).status == SessionStatus.STOPPING
    runtime.unreachable = False
    report = _reconciler(service).run_once()
    assert report.abandoned_sessions == [row.id]
    ended = service.get(row.id)
    assert ended.status == SessionStatus.EXPIRED
    assert leftovers(service.db, runtime, row.id) == []
