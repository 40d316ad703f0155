"""Capturing sessions' running state and restoring it into a new session.

While a session runs, its tmux windows and open notebooks are captured every
``SANDMAN_STATE_CAPTURE_INTERVAL`` and once more as it ends (a stop hook, before
its container goes; a container that no longer answers keeps the last capture).
``POST /sessions`` with ``"restore": "<ended session id>"`` or ``"latest"`` starts
a session like the old one (image, GPU share, TTL, limits, team, project) unless
the request says otherwise, and recreates its tmux windows once it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from sqlalchemy import select

from sandman.domain import CURRENT_STATUSES, SessionStatus
from sandman.environments.state import (
    SessionState,
    capture_argv,
    describe,
    parse_capture,
    restore_commands,
)
from sandman.errors import Conflict, NotFound, SandmanError
from sandman.gpu.types import GpuRequest
from sandman.runtime.base import SessionRuntime
from sandman.services.requests import SessionRequest
from sandman.store.database import Database
from sandman.store.models import Session as SessionRow
from sandman.store.models import SessionStateRow, User, utcnow

log = logging.getLogger(__name__)

RESTORED_LABEL = "restored_from"
LATEST = "latest"
CAPTURE_TIMEOUT = 5.0
FINAL_CAPTURE_TIMEOUT = 3.0
CURRENT = [s.value for s in CURRENT_STATUSES]


def _asks_gpu(gpu: GpuRequest) -> bool:
    given = (gpu.mig_profile, gpu.mig_instance_uuid, gpu.gpu_count, gpu.gpu_memory_gb)
    return gpu.shared or any(value is not None for value in given)


def restored_request(request: SessionRequest, source: SessionRow) -> SessionRequest:
    """``request`` with what it leaves unsaid taken from the ended ``source``."""
    gpu = request.gpu
    if not _asks_gpu(gpu):
        held = (source.gpu_parent_uuid or source.gpu_uuid or "").split(",")
        if source.gpu_share is not None:
            gpu = replace(gpu, shared=True)
        elif source.mig_profile is not None:
            gpu = replace(gpu, mig_profile=source.mig_profile)
        elif held != [""]:
            gpu = replace(gpu, gpu_count=len(held))
        else:
            gpu = replace(gpu, gpu_count=0)
    # Its environment again (whatever that environment's image is now), or its image
    # where it named one; what the request names instead wins.
    environment = request.environment or (None if request.image else source.environment)
    image = request.image or (None if environment else source.image)
    return replace(
        request,
        gpu=gpu,
        ttl_minutes=request.ttl_minutes or source.ttl_minutes,
        image=image,
        environment=environment,
        cpus=request.cpus if request.cpus is not None else source.cpus,
        memory=request.memory or source.memory,
        team=request.team or source.team,
        project=request.project or source.project,
        idle_timeout_minutes=(
            request.idle_timeout_minutes
            if request.idle_timeout_minutes is not None
            else source.idle_timeout_minutes
        ),
        labels={
            **{k: v for k, v in source.labels.items() if k != RESTORED_LABEL},
            **request.labels,
            RESTORED_LABEL: source.id,
        },
    )


class SessionStates:
    def __init__(
        self,
        db: Database,
        runtime: SessionRuntime,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.runtime = runtime
        self.clock = clock

    # ------------------------------------------------------------------ capture
    def _user(self, user_id: str) -> str | None:
        with self.db.read() as db:
            user = db.get(User, user_id)
        return f"{user.uid}:{user.gid}" if user is not None else None

    def capture(self, row: SessionRow, timeout: float = CAPTURE_TIMEOUT) -> SessionState | None:
        """Capture one running session's state and keep it; None when it did not answer."""
        user = self._user(row.user_id)
        if row.container_id is None or user is None:
            return None
        try:
            result = self.runtime.exec(row.container_id, capture_argv(), user, timeout)
        except SandmanError as exc:
            log.debug("no state captured from %s: %s", row.id, exc.message)
            return None
        if result.timed_out or result.exit_code != 0:
            return None
        state = parse_capture(result.output)
        with self.db.transaction() as db:
            kept = db.get(SessionStateRow, row.id)
            if kept is None:
                db.add(
                    SessionStateRow(
                        session_id=row.id,
                        user_id=row.user_id,
                        captured_at=self.clock(),
                        state=state.as_json(),
                    )
                )
            else:
                kept.captured_at, kept.state = self.clock(), state.as_json()
        return state

    def capture_all(self) -> int:
        """Capture every running session (the periodic loop); failures are skipped."""
        with self.db.read() as db:
            rows = list(
                db.scalars(select(SessionRow).where(SessionRow.status == SessionStatus.RUNNING))
            )
        return sum(1 for row in rows if self.capture(row) is not None)

    def on_stop(self, _user_id: str, session_id: str, _reason: str) -> None:
        """A stop hook: one last capture before the container goes (bounded)."""
        with self.db.read() as db:
            row = db.get(SessionRow, session_id)
        if row is not None and row.started_at is not None:
            self.capture(row, FINAL_CAPTURE_TIMEOUT)

    # ------------------------------------------------------------------ restore
    def source(self, user_id: str, ref: str) -> SessionRow:
        """The ended session of ``user_id`` that ``ref`` names (an id or ``latest``):
        404 for another user's or an unknown one, 409 for one still active."""
        with self.db.read() as db:
            if ref == LATEST:
                row = db.scalars(
                    select(SessionRow)
                    .where(
                        SessionRow.user_id == user_id,
                        SessionRow.started_at.is_not(None),
                        SessionRow.status.not_in(CURRENT),
                    )
                    .order_by(SessionRow.ended_at.desc(), SessionRow.id)
                    .limit(1)
                ).first()
                if row is None:
                    raise NotFound(f"user {user_id} has no ended session to restore")
                return row
            row = db.get(SessionRow, ref)
        if row is None or row.user_id != user_id:
            raise NotFound(f"no session {ref!r} of user {user_id} to restore")
        if row.status in CURRENT:
            raise Conflict(f"session {ref} is {row.status}: only an ended session is restored")
        return row

    def restorable(self, user_id: str, limit: int = 10) -> list[SessionRow]:
        """The user's most recently ended sessions that ``source`` would take, newest
        first (the portal's Restore buttons)."""
        with self.db.read() as db:
            return list(
                db.scalars(
                    select(SessionRow)
                    .where(
                        SessionRow.user_id == user_id,
                        SessionRow.started_at.is_not(None),
                        SessionRow.status.not_in(CURRENT),
                    )
                    .order_by(SessionRow.ended_at.desc(), SessionRow.id)
                    .limit(limit)
                )
            )

    def state_of(self, session_id: str) -> SessionState:
        with self.db.read() as db:
            kept = db.get(SessionStateRow, session_id)
        return SessionState.from_json(kept.state if kept is not None else None)

    def note(self, source: SessionRow) -> str:
        return describe(self.state_of(source.id), source.id)

    def on_start(self, user_id: str, session_id: str, _reason: str) -> None:
        """A start hook: a restored session gets its tmux windows back."""
        with self.db.read() as db:
            row = db.get(SessionRow, session_id)
        source = row.labels.get(RESTORED_LABEL) if row is not None else None
        user = self._user(user_id)
        if row is None or source is None or row.container_id is None or user is None:
            return
        for argv in restore_commands(self.state_of(source)):
            try:
                result = self.runtime.exec(row.container_id, argv, user, CAPTURE_TIMEOUT)
            except SandmanError as exc:
                log.warning("restoring %s into %s: %s", source, session_id, exc.message)
                return
            if result.exit_code != 0:
                log.warning(
                    "restoring %s into %s: %s failed: %s",
                    source, session_id, " ".join(argv[:3]), result.output.strip()[:200],
                )  # fmt: skip
