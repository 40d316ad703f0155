"""Sessions: create, extend and end them, and give back everything they held.

Creation is crash-safe: the session row and its reservations (GPU units, port)
are committed in one transaction before anything outside the database happens.
Whatever fails later is undone by ``_release`` and the session is marked
``failed`` with the reason; a process killed half-way leaves a ``starting`` row
that the reconciler finishes the same way.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as Db

from sandman.config import Settings
from sandman.domain import ACTIVE_STATUSES, SessionStatus, validate_user_id
from sandman.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    RuntimeFailure,
    SandmanError,
    SessionConflict,
)
from sandman.gpu.planner import plan
from sandman.gpu.types import Allocation, Claim, GpuDevice, GpuInventory
from sandman.runtime.base import DEPLOYMENT_LABEL, SESSION_LABEL, ContainerRuntime
from sandman.services.container_spec import (
    SessionContainer,
    session_container_spec,
    session_environment,
)
from sandman.services.files import SessionFiles
from sandman.services.gpu_claims import claim_rows, claims_from_rows, session_gpu_fields
from sandman.services.keys import generate_key_pair, normalize_public_keys
from sandman.services.ports import choose_port
from sandman.services.readiness import wait_for_sshd
from sandman.services.requests import (
    SessionRequest,
    check_gpu_request,
    checked_image,
    checked_limits,
    checked_ttl,
)
from sandman.store.database import Database
from sandman.store.models import GpuClaim, PortClaim, User, utcnow
from sandman.store.models import Session as SessionRow

log = logging.getLogger(__name__)

ACTIVE = [s.value for s in ACTIVE_STATUSES]
RESERVE_ATTEMPTS = 20


@dataclass(frozen=True)
class CreatedSession:
    session: SessionRow
    private_key: str | None  # only when generated; never stored
    notes: tuple[str, ...] = ()


SessionHook = Callable[[str, str, str], None]  # (user_id, session_id, reason)


class SessionService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        runtime: ContainerRuntime,
        inventory: GpuInventory,
        files: SessionFiles,
        deployment_id: str,
        worker_id: str,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.db = db
        self.runtime = runtime
        self.inventory = inventory
        self.files = files
        self.deployment_id = deployment_id
        self.worker_id = worker_id
        self.clock = clock
        self.start_hooks: list[SessionHook] = []  # the session is running
        self.stop_hooks: list[SessionHook] = []  # it is about to lose its container
        self.end_hooks: list[SessionHook] = []  # it has ended and holds nothing
        self.gateway_key: str | None = None  # the gateway's identity, authorized in containers
        self._busy: set[str] = set()
        self._busy_lock = threading.Lock()

    # ------------------------------------------------------------------ reads
    def get(self, session_id: str) -> SessionRow:
        with self.db.transaction() as db:
            row = db.get(SessionRow, session_id)
        if row is None:
            raise NotFound(f"no session {session_id!r}")
        return row

    def list_sessions(self, status: str = "active", user_id: str | None = None) -> list[SessionRow]:
        query = select(SessionRow).order_by(SessionRow.created_at)
        if status == "active":
            query = query.where(SessionRow.status.in_(ACTIVE))
        elif status != "all":
            if status not in {s.value for s in SessionStatus}:
                raise InvalidRequest(
                    f"unknown status {status!r}: use active, all or one of "
                    + ", ".join(s.value for s in SessionStatus)
                )
            query = query.where(SessionRow.status == status)
        if user_id is not None:
            query = query.where(SessionRow.user_id == validate_user_id(user_id))
        with self.db.transaction() as db:
            return list(db.scalars(query))

    def claims(self) -> list[Claim]:
        with self.db.transaction() as db:
            return claims_from_rows(list(db.scalars(select(GpuClaim))))

    def claimed_by(self) -> dict[str, str]:
        """Instance or GPU UUID -> session id, for inventory listings."""
        owners: dict[str, str] = {}
        with self.db.transaction() as db:
            for row in db.scalars(select(GpuClaim)):
                owners[row.instance_uuid or row.gpu_uuid] = row.session_id
        return owners

    def counts_by_status(self) -> dict[str, int]:
        with self.db.transaction() as db:
            rows = db.execute(select(SessionRow.status, func.count()).group_by(SessionRow.status))
            return {status: count for status, count in rows}

    # ---------------------------------------------------------------- create
    def create(self, request: SessionRequest) -> CreatedSession:
        user_id = validate_user_id(request.user_id)
        ttl = checked_ttl(
            self.settings,
            self.settings.default_ttl_minutes
            if request.ttl_minutes is None
            else request.ttl_minutes,
        )
        image = checked_image(self.settings, request.image)
        cpus, memory = checked_limits(self.settings, request.cpus, request.memory)
        check_gpu_request(request.gpu)
        keys = normalize_public_keys(request.ssh_public_keys or [])
        if request.ssh_public_keys is not None and not keys:
            raise InvalidRequest("ssh_public_keys is empty: give at least one key or omit it")
        self.runtime.ping()  # refuse before writing anything when the engine is down
        devices = self.inventory.devices()
        session_id = str(uuid.uuid4())
        with self._busy_guard(session_id):
            row, allocations, private_key = self._reserve(
                session_id, user_id, request, ttl, image, cpus, memory, keys, devices
            )
            try:
                row = self._start(row, allocations)
            except BaseException as exc:
                reason = exc.message if isinstance(exc, SandmanError) else repr(exc)
                log.warning("session %s for %s failed: %s", session_id, user_id, reason)
                self._release(session_id, SessionStatus.FAILED, f"creation failed: {reason}")
                # The session may have been ended by a DELETE while its container was
                # still being started; the container it started must not outlive it.
                with contextlib.suppress(SandmanError):
                    self._remove_container(row)
                raise
        notes = tuple(n for a in allocations for n in a.notes)
        return CreatedSession(session=row, private_key=private_key, notes=notes)

    def _reserve(
        self,
        session_id: str,
        user_id: str,
        request: SessionRequest,
        ttl: int,
        image: str,
        cpus: float,
        memory: str,
        keys: list[str],
        devices: list[GpuDevice],
    ) -> tuple[SessionRow, list[Allocation], str | None]:
        """Commit the session row with its GPU units and port, or explain why not."""
        for attempt in range(RESERVE_ATTEMPTS):
            try:
                with self.db.transaction() as db:
                    user = self.ensure_user(db, user_id)
                    self._refuse_second_session(db, user_id)
                    private_key = None
                    if not keys:
                        keys = list(user.ssh_public_keys)
                    if not keys:
                        pair = generate_key_pair(f"{user_id}@sandman")
                        keys, private_key = [pair.public_openssh], pair.private_openssh
                    claims = claims_from_rows(list(db.scalars(select(GpuClaim))))
                    allocations = plan(
                        request.gpu,
                        devices,
                        claims,
                        default_profile=self.settings.default_mig_profile,
                        allow_fallback=self.settings.mig_fallback,
                    )
                    port = choose_port(
                        self.settings.ssh_port_start,
                        self.settings.ssh_port_end,
                        db.scalars(select(PortClaim.port)),
                        self.settings.ssh_bind_address,
                    )
                    now = self.clock()
                    row = SessionRow(
                        id=session_id,
                        user_id=user_id,
                        status=SessionStatus.STARTING.value,
                        image=image,
                        container_name=f"{self.settings.container_prefix}-{user_id}",
                        ssh_port=port,
                        cpus=cpus,
                        memory=memory,
                        team=request.team,
                        project=request.project,
                        labels=dict(request.labels),
                        authorized_keys=keys,
                        ttl_minutes=ttl,
                        created_at=now,
                        expires_at=now + timedelta(minutes=ttl),
                        worker_id=self.worker_id,
                        **session_gpu_fields(allocations, devices),
                    )
                    db.add(row)
                    db.flush()
                    for allocation in allocations:
                        db.add_all(claim_rows(session_id, allocation))
                    db.add(PortClaim(port=port, session_id=session_id))
                return row, allocations, private_key
            except IntegrityError as exc:
                log.info("reservation raced (attempt %d): %s", attempt + 1, exc.orig)
                time.sleep(random.uniform(0, 0.02 * (attempt + 1)))  # let the winner commit
        raise Conflict("could not reserve resources: too many concurrent requests, try again")

    def _start(self, row: SessionRow, allocations: list[Allocation]) -> SessionRow:
        created = [a for a in allocations if a.kind == "mig_create"]
        granted = [a.instance_uuid or a.gpu_uuid for a in allocations if a.kind != "mig_create"]
        for allocation in created:
            instance = self.inventory.create_instance(
                allocation.gpu_uuid, allocation.profile or "", allocation.start
            )
            granted.append(instance.uuid)
            with self.db.transaction() as db:
                for claim in db.scalars(
                    select(GpuClaim).where(
                        GpuClaim.session_id == row.id,
                        GpuClaim.gpu_uuid == allocation.gpu_uuid,
                        GpuClaim.start == allocation.start,
                    )
                ):
                    claim.instance_uuid = instance.uuid
                    claim.created_instance = True
        with self.db.transaction() as db:
            user = db.get_one(User, row.user_id)
            uid, gid = user.uid, user.gid
        container = SessionContainer(
            session_id=row.id,
            user_id=row.user_id,
            uid=uid,
            gid=gid,
            image=row.image,
            name=row.container_name,
            network=self.settings.network_name,
            deployment_id=self.deployment_id,
            ssh_bind_address=self.settings.ssh_bind_address,
            ssh_port=row.ssh_port or 0,
            cpus=row.cpus,
            memory=row.memory,
            pids_limit=self.settings.pids_limit,
            shm_size=self.settings.shm_size,
            gpu_uuids=tuple(granted),
            mig_profile=row.mig_profile,
            real_gpus=not self.inventory.simulated,
        )
        paths, host_public_key = self.files.write_session(
            row.id,
            row.user_id,
            uid,
            gid,
            self.container_keys(list(row.authorized_keys)),
            session_environment(container),
        )
        self._clear_stale_container(row.container_name, row.id)
        state = self.runtime.start(session_container_spec(container, paths))
        with self.db.transaction() as db:
            current = db.get_one(SessionRow, row.id)
            current.container_id = state.id
            current.container_ip = state.ip_address
            current.host_public_key = host_public_key
            current.gpu_uuid = ",".join(granted) or None
            self._still_starting(current)

        def why_not_alive() -> str | None:
            found = self.runtime.inspect(state.id)
            if found is None:
                return "the container vanished while starting"
            if not found.running:
                logs = self.runtime.logs(state.id, tail=20).strip()
                return f"the container exited ({found.status}, code {found.exit_code}): {logs}"
            return None

        wait_for_sshd(
            self.ssh_probe_address(),
            row.ssh_port or 0,
            self.settings.start_timeout,
            alive=why_not_alive,
        )
        with self.db.transaction() as db:
            current = db.get_one(SessionRow, row.id)
            self._still_starting(current)
            current.status = SessionStatus.RUNNING.value
            current.started_at = self.clock()
            current.last_activity = current.started_at
        self._run_hooks(self.start_hooks, current.user_id, current.id, "running")
        return current

    def container_keys(self, user_keys: list[str]) -> list[str]:
        """Who may log in to the container's sshd: the user directly, the gateway, or both."""
        mode = self.settings.ssh_mode
        keys = list(user_keys) if mode in ("direct", "both") else []
        if mode in ("gateway", "both"):
            if not self.gateway_key:
                raise RuntimeFailure("the gateway's identity key is not loaded")
            keys.append(self.gateway_key)
        return keys

    # ------------------------------------------------------------- lifecycle
    def extend(self, session_id: str, ttl_minutes: int) -> SessionRow:
        ttl = checked_ttl(self.settings, ttl_minutes)
        with self.db.transaction() as db:
            row = db.get(SessionRow, session_id)
            if row is None:
                raise NotFound(f"no session {session_id!r}")
            if row.status not in (SessionStatus.STARTING, SessionStatus.RUNNING):
                raise Conflict(f"session {session_id} is {row.status}; only active ones extend")
            row.ttl_minutes = ttl
            row.expires_at = self.clock() + timedelta(minutes=ttl)
            return row

    def end(self, session_id: str, status: SessionStatus, reason: str) -> SessionRow:
        """End a session and release what it holds; ending an ended session is a no-op."""
        with self.db.transaction() as db:
            row = db.get(SessionRow, session_id)
            if row is None:
                raise NotFound(f"no session {session_id!r}")
            if row.status not in ACTIVE:
                return row
        return self._release(session_id, status, reason)

    def end_all(self, reason: str) -> list[SessionRow]:
        ended = []
        for row in self.list_sessions("active"):
            try:
                ended.append(self.end(row.id, SessionStatus.DELETED, reason))
            except SandmanError as exc:
                log.error("could not end session %s: %s", row.id, exc.message)
        return ended

    def _release(self, session_id: str, status: SessionStatus, reason: str) -> SessionRow:
        """Give back container, MIG instances, GPU units and port; then mark the end.

        Every step is idempotent, so a crash half-way is finished by running this again.
        """
        with self.db.transaction() as db:
            row = db.get_one(SessionRow, session_id)
            if row.status not in ACTIVE:
                return row
            if row.status != SessionStatus.STOPPING:
                row.status = SessionStatus.STOPPING.value
                row.stop_status = status.value
                row.end_reason = reason
            row.worker_id = self.worker_id
            created = [
                (c.gpu_uuid, c.instance_uuid)
                for c in db.scalars(
                    select(GpuClaim).where(
                        GpuClaim.session_id == session_id, GpuClaim.created_instance
                    )
                )
                if c.instance_uuid
            ]
            final = SessionStatus(row.stop_status or status.value)
        self._run_hooks(self.stop_hooks, row.user_id, session_id, row.end_reason or reason)
        self._remove_container(row)
        for gpu_uuid, instance_uuid in dict.fromkeys(created):
            try:
                self.inventory.destroy_instance(gpu_uuid, instance_uuid)
            except SandmanError as exc:
                log.error("could not destroy MIG instance %s: %s", instance_uuid, exc.message)
        with self.db.transaction() as db:
            db.execute(delete(GpuClaim).where(GpuClaim.session_id == session_id))
            db.execute(delete(PortClaim).where(PortClaim.session_id == session_id))
            row = db.get_one(SessionRow, session_id)
            row.status = final.value
            row.ended_at = self.clock()
        self.files.remove_session(session_id)
        log.info("session %s of %s ended (%s): %s", session_id, row.user_id, final, row.end_reason)
        self._run_hooks(self.end_hooks, row.user_id, session_id, row.end_reason or reason)
        return row

    @staticmethod
    def _run_hooks(hooks: list[SessionHook], user_id: str, session_id: str, reason: str) -> None:
        for hook in hooks:
            try:
                hook(user_id, session_id, reason)
            except Exception:
                log.exception("session hook %r failed", hook)

    def finish_abandoned(self, session_id: str, reason: str) -> None:
        """Release a session whose owner process died (called by the reconciler)."""
        with self._busy_guard(session_id):
            self._release(session_id, SessionStatus.FAILED, reason)

    def is_busy(self, session_id: str) -> bool:
        with self._busy_lock:
            return session_id in self._busy

    # --------------------------------------------------------------- helpers
    @contextmanager
    def _busy_guard(self, session_id: str) -> Iterator[None]:
        with self._busy_lock:
            self._busy.add(session_id)
        try:
            yield
        finally:
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

    def _clear_stale_container(self, name: str, session_id: str) -> None:
        found = self.runtime.inspect(name)
        if found is None:
            return
        if found.labels.get(DEPLOYMENT_LABEL) != self.deployment_id:
            raise RuntimeFailure(
                f"a container named {name} exists and is not managed by this Sandman; "
                "remove it or choose another container_prefix"
            )
        if found.labels.get(SESSION_LABEL) != session_id:
            self.runtime.remove(found.id, 0)

    def _still_starting(self, row: SessionRow) -> None:
        if row.status != SessionStatus.STARTING:
            raise Conflict(f"session {row.id} was ended while starting ({row.end_reason})")

    def ssh_probe_address(self) -> str:
        bind = self.settings.ssh_bind_address
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind, bind)

    def ensure_user(self, db: Db, user_id: str) -> User:
        user = db.get(User, user_id)
        if user is not None:
            return user
        taken = set(db.scalars(select(User.uid)))
        adopted = self.files.existing_workspace_owner(user_id)
        if adopted is not None and adopted >= self.settings.uid_base and adopted not in taken:
            uid = adopted
        else:
            uid = max([self.settings.uid_base - 1, *taken]) + 1
        user = User(user_id=user_id, uid=uid, gid=uid, ssh_public_keys=[], created_at=utcnow())
        db.add(user)
        db.flush()
        return user

    def _refuse_second_session(self, db: Db, user_id: str) -> None:
        existing = db.scalars(
            select(SessionRow).where(SessionRow.user_id == user_id, SessionRow.status.in_(ACTIVE))
        ).first()
        if existing is not None:
            raise SessionConflict(
                f"user {user_id} already has an active session {existing.id} "
                f"({existing.status}, expires {existing.expires_at.isoformat()}); "
                "delete it or extend it instead"
            )


__all__ = ["CreatedSession", "SessionRequest", "SessionService"]
