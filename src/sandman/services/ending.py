"""Ending sessions: exactly one teardown per session, whoever asks.

Every status change is a compare-and-set on the session's row
(``store.transitions``): of any number of concurrent enders (a DELETE, the
reaper, the reconciler, another process), exactly one moves the row to
``stopping`` and runs the teardown; the others wait for it (a DELETE) or leave
it (the reaper, the reconciler). A teardown that fails half-way (the runtime
unreachable) is resumed by a retried DELETE or the reconciler; one whose
process died is finished by another process's reconciler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session as Db

from sandman.config import Settings
from sandman.domain import SessionStatus
from sandman.errors import NotFound, SandmanError
from sandman.gpu.types import GpuInventory
from sandman.runtime.base import SESSION_LABEL, SessionRuntime
from sandman.services.session_reads import ACTIVE, SessionReads
from sandman.store.database import Database
from sandman.store.models import GpuClaim, PortClaim
from sandman.store.models import Session as SessionRow
from sandman.store.transitions import transition

log = logging.getLogger(__name__)

ENDABLE = [SessionStatus.STARTING.value, SessionStatus.RUNNING.value]
SessionHook = Callable[[str, str, str], None]  # (user_id, session_id, reason)


@dataclass
class Teardown:
    """What one teardown gives back; read in the same transaction that claimed it."""

    row: SessionRow
    final: SessionStatus
    created_instances: list[tuple[str, str]] = field(default_factory=list)
    terminated_at: datetime | None = None  # when the runtime says the container ended


class SessionEnding(SessionReads):
    """The ending half of ``SessionService`` (which sets these attributes)."""

    settings: Settings
    db: Database
    runtime: SessionRuntime
    inventory: GpuInventory
    worker_id: str
    clock: Callable[[], datetime]
    stop_hooks: list[SessionHook]
    end_hooks: list[SessionHook]
    release_hooks: list[Callable[[Db, SessionRow, datetime], None]]
    _busy: set[str]  # sessions this process is creating
    _ending: set[str]  # sessions a thread of this process is ending
    _busy_lock: threading.Lock

    def end(
        self,
        session_id: str,
        status: SessionStatus,
        reason: str,
        seen_version: int | None = None,
        wait: bool = False,
        terminated_at: datetime | None = None,
    ) -> SessionRow:
        """End a session and give back what it holds; ending an ended session is a no-op.

        Only the caller whose compare-and-set moves the row to ``stopping`` runs the
        teardown; ``seen_version`` makes the change conditional on the row being
        unchanged since the caller read it. Within this process one caller at a time
        ends a session (``_claim``), so a teardown of ours that failed half-way can be
        resumed without racing one still running. With ``wait``, a caller that lost
        the race waits (bounded) for the winner's teardown to finish.
        ``terminated_at``: when the runtime says the container already ended (a pod
        that failed or was evicted); the grant's end in the cost ledger is then no
        later than that. A teardown resumed after a failure charges up to its end.
        """
        if not self._claim(session_id):  # another thread of this process is ending it
            return self._wait_ended(session_id) if wait else self.get(session_id)
        cancelled = False
        try:
            with self.db.transaction() as db:
                row = db.get(SessionRow, session_id)
                if row is None:
                    raise NotFound(f"no session {session_id!r}")
                if row.status == SessionStatus.QUEUED:
                    cancelled = self._cancel(db, row, reason, seen_version)
                    db.refresh(row)  # cancelled, or started meanwhile: then ended below
                teardown = None
                if row.status not in (SessionStatus.QUEUED, SessionStatus.CANCELLED):
                    owned = transition(
                        db,
                        session_id,
                        ENDABLE,
                        SessionStatus.STOPPING,
                        seen_version=seen_version,
                        stop_status=status.value,
                        end_reason=reason,
                        worker_id=self.worker_id,
                    )
                    unfinished = (
                        row.status == SessionStatus.STOPPING and row.worker_id == self.worker_id
                    )
                    teardown = self._claimed(db, session_id) if owned or unfinished else None
                    if teardown is not None:
                        teardown.terminated_at = terminated_at
            if cancelled:
                log.info("queued request %s of %s cancelled: %s", row.id, row.user_id, reason)
                self._run_hooks(self.end_hooks, row.user_id, row.id, reason)
            if teardown is not None:
                return self._teardown(teardown)  # ours, or ours that had failed half-way
        finally:
            self._release(session_id)
        return self._wait_ended(session_id) if wait else self.get(session_id)

    def cancel_queued(self, session_id: str, reason: str) -> bool:
        """Cancel a request while it is still queued; False once it has started or ended."""
        with self.db.transaction() as db:
            row = db.get(SessionRow, session_id)
            if row is None or row.status != SessionStatus.QUEUED:
                return False
            cancelled = self._cancel(db, row, reason, row.version)
        if cancelled:
            log.info("queued request %s of %s cancelled: %s", row.id, row.user_id, reason)
            self._run_hooks(self.end_hooks, row.user_id, row.id, reason)
        return cancelled

    def _cancel(self, db: Db, row: SessionRow, reason: str, seen_version: int | None) -> bool:
        """A queued request ends at once as ``cancelled``: it holds nothing."""
        return transition(
            db,
            row.id,
            [SessionStatus.QUEUED],
            SessionStatus.CANCELLED,
            seen_version=seen_version,
            stop_status=SessionStatus.CANCELLED.value,
            end_reason=reason,
            ended_at=self.clock(),
        )

    def end_all(self, reason: str, concurrency: int | None = None) -> list[SessionRow]:
        """End every active session and cancel every queued request, ``concurrency``
        teardowns at a time."""
        rows = self.list_sessions("active", queued=True)
        workers = max(1, min(concurrency or self.settings.delete_concurrency, len(rows) or 1))

        def end_one(row: SessionRow) -> SessionRow | None:
            try:
                return self.end(row.id, SessionStatus.DELETED, reason, wait=True)
            except SandmanError as exc:
                log.error("could not end session %s: %s", row.id, exc.message)
                return None

        with ThreadPoolExecutor(workers, thread_name_prefix="sandman-end") as pool:
            return [row for row in pool.map(end_one, rows) if row is not None]

    def finish_abandoned(self, session_id: str, dead_worker: str | None, reason: str) -> bool:
        """Take over a session whose owner process died half-way and finish it (reconciler).

        A ``starting`` one fails; a ``stopping`` one ends as it was meant to.
        Returns False when another process took it first.
        """
        if not self._claim(session_id):
            return False
        try:
            return self._finish_abandoned(session_id, dead_worker, reason)
        finally:
            self._release(session_id)

    def _finish_abandoned(self, session_id: str, dead_worker: str | None, reason: str) -> bool:
        with self.db.transaction() as db:
            row = db.get(SessionRow, session_id)
            if row is None or row.worker_id != dead_worker:
                return False
            if row.status == SessionStatus.STARTING:
                owned = transition(
                    db,
                    session_id,
                    [SessionStatus.STARTING],
                    SessionStatus.STOPPING,
                    owners=[dead_worker],
                    stop_status=SessionStatus.FAILED.value,
                    end_reason=reason,
                    worker_id=self.worker_id,
                )
            else:
                owned = transition(
                    db,
                    session_id,
                    [SessionStatus.STOPPING],
                    owners=[dead_worker],
                    worker_id=self.worker_id,
                )
            teardown = self._claimed(db, session_id) if owned else None
        if teardown is None:
            return False
        self._teardown(teardown)
        return True

    def resume_teardown(self, session_id: str) -> bool:
        """Finish a teardown this process won but could not complete (the runtime was
        unreachable, say): the session is ``stopping``, owned by this worker, and no
        thread of this process is ending it. Returns False when there was nothing to
        resume."""
        if not self._claim(session_id):
            return False
        try:
            with self.db.transaction() as db:
                row = db.get(SessionRow, session_id)
                if (
                    row is None
                    or row.status != SessionStatus.STOPPING
                    or row.worker_id != self.worker_id
                ):
                    return False
                teardown = self._claimed(db, session_id)
            self._teardown(teardown)
            return True
        finally:
            self._release(session_id)

    def _claim(self, session_id: str) -> bool:
        """Take this process's right to end the session; False if a thread has it."""
        with self._busy_lock:
            if session_id in self._ending:
                return False
            self._ending.add(session_id)
            return True

    def _release(self, session_id: str) -> None:
        with self._busy_lock:
            self._ending.discard(session_id)

    def _claimed(self, db: Db, session_id: str) -> Teardown:
        row = db.get_one(SessionRow, session_id)
        db.refresh(row)
        created = [
            (c.gpu_uuid, c.instance_uuid)
            for c in db.scalars(
                select(GpuClaim).where(GpuClaim.session_id == session_id, GpuClaim.created_instance)
            )
            if c.instance_uuid
        ]
        final = SessionStatus(row.stop_status or SessionStatus.FAILED.value)
        return Teardown(row, final, list(dict.fromkeys(created)))

    def _teardown(self, teardown: Teardown) -> SessionRow:
        """Give back container, MIG instances, GPU units and port; then mark the end.

        Runs once per session (its caller won the compare-and-set); every step is
        idempotent, so a crash half-way is finished by the reconciler running it again.
        """
        row = teardown.row
        reason = row.end_reason or teardown.final.value
        self._run_hooks(self.stop_hooks, row.user_id, row.id, reason)
        self._remove_container(row)
        for gpu_uuid, instance_uuid in teardown.created_instances:
            try:
                self.inventory.destroy_instance(gpu_uuid, instance_uuid)
            except SandmanError as exc:
                log.error("could not destroy MIG instance %s: %s", instance_uuid, exc.message)
        with self.db.transaction() as db:
            db.execute(delete(GpuClaim).where(GpuClaim.session_id == row.id))
            db.execute(delete(PortClaim).where(PortClaim.session_id == row.id))
            now = self.clock()
            ended = transition(
                db,
                row.id,
                [SessionStatus.STOPPING],
                teardown.final,
                owner=self.worker_id,
                ended_at=now,
            )
            row = db.get_one(SessionRow, row.id)
            db.refresh(row)
            if ended:  # exactly once per session: the grant's end, with the claims' delete
                until = now
                if teardown.terminated_at is not None:
                    until = min(now, teardown.terminated_at)
                for hook in self.release_hooks:
                    hook(db, row, until)
        self.runtime.discard(row.id)
        log.info("session %s of %s ended (%s): %s", row.id, row.user_id, row.status, reason)
        self._run_hooks(self.end_hooks, row.user_id, row.id, reason)
        return row

    def _wait_ended(self, session_id: str) -> SessionRow:
        """The session once another caller's teardown has finished (or the wait ran out)."""
        deadline = time.monotonic() + self.settings.stop_grace_period + 60
        row = self.get(session_id)
        while row.status in ACTIVE and time.monotonic() < deadline:
            time.sleep(0.05)
            row = self.get(session_id)
        return row

    @staticmethod
    def _run_hooks(hooks: list[SessionHook], user_id: str, session_id: str, reason: str) -> None:
        for hook in hooks:
            try:
                hook(user_id, session_id, reason)
            except Exception:
                log.exception("session hook %r failed", hook)

    def is_busy(self, session_id: str) -> bool:
        """Whether this process is creating the session or ending it right now."""
        with self._busy_lock:
            return session_id in self._busy or session_id in self._ending

    def _not_busy(self, session_id: str) -> None:
        with self._busy_lock:
            self._busy.discard(session_id)

    def _remove_container(self, row: SessionRow) -> None:
        target = row.container_id
        if target is None:
            found = self.runtime.inspect(row.container_name)
            if found is None or found.labels.get(SESSION_LABEL) != row.id:
                return
            target = found.id
        self.runtime.remove(target, self.settings.stop_grace_period)
