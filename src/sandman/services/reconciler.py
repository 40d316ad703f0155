"""The reconciler: the database says what should exist; this makes it so.

At start-up and on a timer it removes managed containers that have no active
session, ends sessions whose container is gone or dead, finishes sessions left
half-created or half-ended by a process that died, and fixes drift between the
GPU inventory and the database (orphaned dynamic MIG instances are destroyed,
sessions whose instance vanished are ended).

It never ends a session on stale evidence: it reads what should be (the rows)
before what is (the containers), leaves alone sessions younger than the grace
period (as JupyterHub's route check skips pending servers), inspects a
container once more before calling its session lost, and ends it only if the
row is unchanged since it was read (a compare-and-set on its version). With
several processes on one database, one reconciles at a time (a lease).

A lost session's reason is the container's state, plus the runtime's last event
where it keeps one (a pod's ``OutOfnvidia.com/mig-1g.5gb``, an image pull error,
an eviction); a pod already deleted has none left to read. Where the runtime says
when the container ended (a pod), the cost ledger charges up to then, not up to
the pass that noticed.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from sandman.domain import SessionStatus
from sandman.errors import SandmanError
from sandman.gpu.types import GpuDevice, MigMode
from sandman.runtime.base import DEPLOYMENT_LABEL, SESSION_LABEL, ContainerState, Explaining
from sandman.services.sessions import SessionService
from sandman.store.models import GpuClaim, Worker
from sandman.store.models import Session as SessionRow
from sandman.store.transitions import acquire_lease

LEASE = "reconciler"

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    removed_containers: list[str] = field(default_factory=list)
    ended_sessions: list[str] = field(default_factory=list)
    abandoned_sessions: list[str] = field(default_factory=list)
    destroyed_instances: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: bool = False  # another process holds the reconciler's lease


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def container_verdict(session: SessionRow, container: ContainerState | None) -> str | None:
    """Why a running session must end given its container, or None if all is well."""
    if container is not None and container.labels.get(SESSION_LABEL) != session.id:
        container = None  # a container of that name, but another session's
    if container is None:
        return "the session's container vanished"
    if not container.running:
        return f"the session's container is {container.status} (exit code {container.exit_code})"
    return None


def with_last_event(verdict: str, event: str | None) -> str:
    """The verdict with the runtime's last word on the container, when it has one."""
    return f"{verdict}; last event: {event}" if event else verdict


def orphan_instances(devices: list[GpuDevice], claims: list[GpuClaim]) -> list[tuple[str, str]]:
    """(gpu, instance) pairs on dynamic GPUs that no claim covers: left by a crash."""
    held: dict[str, list[tuple[int, int]]] = {}
    for claim in claims:
        held.setdefault(claim.gpu_uuid, []).append((claim.start, claim.start + claim.size))
    orphans = []
    for device in devices:
        if device.mig_mode != MigMode.DYNAMIC:
            continue
        for instance in device.instances:
            span = (instance.start, instance.start + instance.size)
            covered = any(a < span[1] and span[0] < b for a, b in held.get(device.uuid, []))
            if not covered:
                orphans.append((device.uuid, instance.uuid))
    return orphans


class Reconciler:
    def __init__(
        self,
        sessions: SessionService,
        stale_after: float,
        grace: float = 30.0,
        hostname: str | None = None,
        pid: int | None = None,
    ) -> None:
        self.sessions = sessions
        self.stale_after = timedelta(seconds=stale_after)
        self.grace = timedelta(seconds=grace)
        self.hostname = hostname or socket.gethostname()
        self.pid = pid or os.getpid()
        self.report_hooks: list[Callable[[ReconcileReport], None]] = []  # after each pass

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.sessions.clock

    def heartbeat(self) -> None:
        now = self.clock()
        with self.sessions.db.transaction() as db:
            worker = db.get(Worker, self.sessions.worker_id)
            if worker is None:
                db.add(
                    Worker(
                        id=self.sessions.worker_id,
                        hostname=self.hostname,
                        pid=self.pid,
                        started_at=now,
                        heartbeat_at=now,
                    )
                )
            else:
                worker.heartbeat_at = now
            db.execute(delete(Worker).where(Worker.heartbeat_at < now - timedelta(days=1)))

    def _live_workers(self) -> set[str]:
        now = self.clock()
        live = {self.sessions.worker_id}
        with self.sessions.db.transaction() as db:
            for worker in db.scalars(select(Worker)):
                if worker.id == self.sessions.worker_id:
                    continue
                if worker.hostname == self.hostname:
                    if worker.pid != self.pid and pid_alive(worker.pid):
                        live.add(worker.id)
                elif now - worker.heartbeat_at < self.stale_after:
                    live.add(worker.id)
        return live

    def holds_lease(self) -> bool:
        with self.sessions.db.transaction() as db:
            return acquire_lease(db, LEASE, self.sessions.worker_id, self.clock(), self.stale_after)

    def settled(self, row: SessionRow, now: datetime) -> bool:
        """Whether the session has been running longer than the grace period."""
        return now - (row.started_at or row.created_at) >= self.grace

    def run_once(self) -> ReconcileReport:
        report = ReconcileReport()
        self.heartbeat()
        if not self.holds_lease():
            report.skipped = True
            return report
        self._sessions_and_containers(report)
        self._gpu_drift(report)
        if any(
            [
                report.removed_containers,
                report.ended_sessions,
                report.abandoned_sessions,
                report.destroyed_instances,
            ]
        ):
            log.info("reconciler: %s", report)
        for hook in self.report_hooks:
            try:
                hook(report)
            except Exception:
                log.exception("reconciler hook %r failed", hook)
        return report

    def _sessions_and_containers(self, report: ReconcileReport) -> None:
        service = self.sessions
        rows = service.list_sessions("active")  # what should be, read first
        live = self._live_workers()
        containers = service.runtime.list({DEPLOYMENT_LABEL: service.deployment_id})
        by_session = {c.labels.get(SESSION_LABEL, ""): c for c in containers}
        now = self.clock()
        for row in rows:
            if service.is_busy(row.id):
                continue
            try:
                if row.status == SessionStatus.STOPPING and row.worker_id == service.worker_id:
                    # A teardown of ours that failed half-way (the runtime was down).
                    if service.resume_teardown(row.id):
                        report.abandoned_sessions.append(row.id)
                    continue
                if row.status in (SessionStatus.STARTING, SessionStatus.STOPPING):
                    if row.worker_id not in live and service.finish_abandoned(
                        row.id,
                        row.worker_id,
                        "Sandman stopped while the session was changing state",
                    ):
                        report.abandoned_sessions.append(row.id)
                    continue
                if not self.settled(row, now):
                    continue
                if container_verdict(row, by_session.get(row.id)) is None:
                    continue
                # Evidence from the listing may predate the row: look again.
                fresh = service.runtime.inspect(row.container_id or row.container_name)
                verdict = container_verdict(row, fresh)
                if verdict is None:
                    continue
                verdict = with_last_event(verdict, self._last_event(row, fresh))
                ended = service.end(
                    row.id,
                    SessionStatus.LOST,
                    verdict,
                    seen_version=row.version,
                    terminated_at=fresh.finished_at if fresh is not None else None,
                )
                if ended.status == SessionStatus.LOST and ended.end_reason == verdict:
                    report.ended_sessions.append(row.id)
            except SandmanError as exc:
                report.errors.append(f"session {row.id}: {exc.message}")
        active = service.active_ids()
        for container in containers:
            session_id = container.labels.get(SESSION_LABEL, "")
            if session_id in active or service.is_busy(session_id):
                continue
            try:
                service.runtime.remove(container.id, 0)
                report.removed_containers.append(container.name)
            except SandmanError as exc:
                report.errors.append(f"container {container.name}: {exc.message}")

    def _last_event(self, row: SessionRow, container: ContainerState | None) -> str | None:
        """The runtime's own words for a dead container of this session (a pod's last
        event), where the runtime keeps them; never for a container that is gone."""
        runtime = self.sessions.runtime
        if container is None or container.labels.get(SESSION_LABEL) != row.id:
            return None
        if not isinstance(runtime, Explaining):
            return None
        try:
            return runtime.last_event(container.id)
        except SandmanError as exc:  # the reason is a courtesy: the session ends all the same
            log.info("no last event for session %s: %s", row.id, exc.message)
            return None

    def _gpu_drift(self, report: ReconcileReport) -> None:
        service = self.sessions
        if service.inventory.backend == "kubernetes":
            # The units a node advertises are counts, not devices Sandman made: a pod's
            # own state (gone, failed, evicted) says when a session lost its GPU.
            return
        with service.db.read() as db:  # what should be, read first
            claimed = list(db.scalars(select(GpuClaim)))
            holders = {c.session_id for c in claimed if c.instance_uuid and c.session_id}
            running = {
                row.id: row
                for row in db.scalars(
                    select(SessionRow).where(
                        SessionRow.status == SessionStatus.RUNNING, SessionRow.id.in_(holders)
                    )
                )
            }
        devices = service.inventory.devices()
        existing = {i.uuid for d in devices for i in d.instances}
        now = self.clock()
        vanished = {
            c.session_id
            for c in claimed
            if c.instance_uuid
            and c.instance_uuid not in existing
            and c.session_id in running
            and self.settled(running[c.session_id], now)
        }
        with service.db.read() as db:  # claims made since the first read cover new instances
            claims = list(db.scalars(select(GpuClaim)))
        for session_id in sorted(s for s in vanished if s is not None):
            if service.is_busy(session_id):
                continue
            try:
                reason = "the session's MIG instance vanished"
                ended = service.end(
                    session_id,
                    SessionStatus.LOST,
                    reason,
                    seen_version=running[session_id].version,
                )
                if ended.status == SessionStatus.LOST and ended.end_reason == reason:
                    report.ended_sessions.append(session_id)
            except SandmanError as exc:
                report.errors.append(f"session {session_id}: {exc.message}")
        for gpu_uuid, instance_uuid in orphan_instances(devices, claims):
            try:
                service.inventory.destroy_instance(gpu_uuid, instance_uuid)
                report.destroyed_instances.append(instance_uuid)
            except SandmanError as exc:
                report.errors.append(f"instance {instance_uuid}: {exc.message}")
