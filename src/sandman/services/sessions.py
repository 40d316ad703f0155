"""Sessions: create, extend and end them, and give back everything they held.

Creation is crash-safe: the session row and its reservations (GPU units, port)
are committed in one transaction (``reserve``) before anything outside the
database happens (``launch``). Whatever fails later is undone by the teardown
and the session is marked ``failed`` with the reason; a process killed
half-way leaves a ``starting`` row that the reconciler finishes the same way.

Ending sessions (exactly one teardown, whoever asks) lives in ``ending``; the
reads in ``session_reads``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as Db

from sandman.config import Settings
from sandman.domain import SessionStatus, validate_user_id
from sandman.environments.model import Choice
from sandman.errors import (
    CapacityExhausted,
    Conflict,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    RuntimeFailure,
    SandmanError,
    SessionConflict,
)
from sandman.gpu.mps import MpsControl, limit_session
from sandman.gpu.placement import DemandRecorder
from sandman.gpu.planner import plan
from sandman.gpu.sharing import session_share
from sandman.gpu.types import Allocation, GpuDevice, GpuInventory, GpuRequest
from sandman.observe.idle import checked_idle_timeout
from sandman.runtime.base import (
    DEPLOYMENT_LABEL,
    SESSION_LABEL,
    ContainerState,
    Endpoint,
    SessionRuntime,
)
from sandman.services.container_spec import SessionContainer, session_launch
from sandman.services.ending import ENDABLE, SessionEnding, SessionHook
from sandman.services.gpu_claims import (
    claim_rows,
    claims_from_rows,
    cluster_placement,
    session_gpu_fields,
)
from sandman.services.host_keys import HostKeys
from sandman.services.keys import generate_key_pair, normalize_public_keys
from sandman.services.ports import choose_port
from sandman.services.readiness import sshd_answers, wait_for_sshd
from sandman.services.requests import (
    SessionRequest,
    check_gpu_request,
    checked_image,
    checked_limits,
    checked_ttl,
    with_workload,
)
from sandman.services.session_reads import CURRENT
from sandman.services.workspaces import configured_quota
from sandman.store.database import Database
from sandman.store.models import GpuClaim, PortClaim, User, utcnow
from sandman.store.models import Session as SessionRow
from sandman.store.transitions import transition

# (db, user, request, ttl, image, planned allocations, devices): raises to refuse.
AdmissionCheck = Callable[
    [Db, str, SessionRequest, int, str, list[Allocation], list[GpuDevice]], None
]
# (db, user, request, ttl, image, devices): raises to refuse what waiting cannot cure.
QueueCheck = Callable[[Db, str, SessionRequest, int, str, list[GpuDevice]], None]
LedgerHook = Callable[[Db, SessionRow, datetime], None]  # (db, session, at)
log = logging.getLogger(__name__)

RESERVE_ATTEMPTS = 20
USER_ATTEMPTS = 20  # a new user's uid, against other processes making users at once


@dataclass(frozen=True)
class Reservation:
    """A committed session row with its grants; what ``launch`` needs to start it."""

    session: SessionRow
    allocations: list[Allocation]
    private_key: str | None  # only when generated; never stored
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Grant:
    """Where a request is placed: its GPU allocations (on ``devices``) and its port."""

    allocations: list[Allocation]
    devices: list[GpuDevice]
    port: int | None


def queue_request(request: SessionRequest) -> dict[str, Any]:
    """What a queued row keeps of its request to place it later (the rest is on the row)."""
    return {"gpu": asdict(request.gpu)}


def queued_request(row: SessionRow) -> SessionRequest:
    """The request a queued row stands for, as ``_place`` takes it."""
    asked = dict((row.queue_request or {}).get("gpu") or {})
    known = {f.name for f in fields(GpuRequest)}
    return SessionRequest(
        user_id=row.user_id,
        ttl_minutes=row.ttl_minutes,
        gpu=GpuRequest(**{k: v for k, v in asked.items() if k in known}),
        image=row.image,
        cpus=row.cpus,
        memory=row.memory,
        team=row.team,
        project=row.project,
        priority=row.priority,
        idle_timeout_minutes=row.idle_timeout_minutes,
        labels=dict(row.labels),
        environment=row.environment,
    )


@dataclass(frozen=True)
class CreatedSession:
    session: SessionRow
    private_key: str | None  # only when generated; never stored
    notes: tuple[str, ...] = ()


Probe = Callable[[str, int], bool]  # does sshd answer at (host, port)?


class SessionService(SessionEnding):
    def __init__(
        self,
        settings: Settings,
        db: Database,
        runtime: SessionRuntime,
        inventory: GpuInventory,
        host_keys: HostKeys,
        deployment_id: str,
        worker_id: str,
        clock: Callable[[], datetime] = utcnow,
        probe: Probe = sshd_answers,
    ) -> None:
        self.settings = settings
        self.db = db
        self.runtime = runtime
        self.inventory = inventory
        self.host_keys = host_keys
        self.deployment_id = deployment_id
        self.worker_id = worker_id
        self.clock = clock
        self.probe = probe
        self.mps = MpsControl(settings.mps_pipe_directory)  # GPUs shared with MPS
        self.demand = DemandRecorder()  # the MIG shapes asked for: placement keeps room for them
        self.start_hooks: list[SessionHook] = []  # the session is running
        self.stop_hooks: list[SessionHook] = []  # it is about to lose its container
        self.end_hooks: list[SessionHook] = []  # it has ended and holds nothing
        # Run inside the reservation's transaction, after placement: a refusal here
        # (quotas) rolls the whole reservation back.
        self.admission_checks: list[AdmissionCheck] = []
        self.extension_checks: list[Callable[[SessionRow, int], None]] = []
        # Run before a request is queued: a refusal (a quota no wait would satisfy)
        # is the answer instead of a place in the queue.
        self.queue_checks: list[QueueCheck] = []
        # Run before placement, for a new request and a queued one alike: a refusal
        # that does not depend on where the request would go (a spent budget).
        self.request_checks: list[Callable[[Db, str, SessionRequest], None]] = []
        # Inside the transaction that grants a session its GPUs (reservation or
        # promotion from the queue), and the one that takes them back (teardown).
        self.grant_hooks: list[LedgerHook] = []
        self.release_hooks: list[LedgerHook] = []
        # Told of every request's outcome: (request, "started"|"queued"|"refused", why).
        self.demand_hooks: list[Callable[[SessionRequest, str, str | None], None]] = []
        # The gateway's identity: trusted through certificates of these CAs when set,
        # else authorized in the containers itself.
        self.gateway_key: str | None = None
        self.trusted_ca_keys: Callable[[], list[str]] | None = None
        # A key only this session's sshd authorizes (SSHPiper's), made per session.
        self.session_key: Callable[[str], str] | None = None
        # (user, image, environment) -> what the request starts from (the environments'
        # registry); unset: the image, one of ``allowed_images``.
        self.choose_environment: Callable[[str, str | None, str | None], Choice] | None = None
        # session id -> the secret its web apps require (written into the container).
        self.apps_secret: Callable[[str], str] | None = None
        # (user, snapshot image, base image) -> whether a restore may start from that
        # snapshot: only the user's own (``services.snapshots``); unset: none may.
        self.allow_snapshot: Callable[[str, str, str], bool] | None = None
        # (db, image) -> the image a snapshot was made from, which the quotas check
        # when a queued restore is promoted; None for an image that is no snapshot.
        self.snapshot_base: Callable[[Db, str], str | None] | None = None
        self._busy: set[str] = set()
        self._ending: set[str] = set()
        self._busy_lock = threading.Lock()

    @property
    def cluster_places(self) -> bool:
        """Whether the cluster, not Sandman, picks each session's node and device."""
        return self.inventory.backend == "kubernetes"

    # ---------------------------------------------------------------- create
    def create(self, request: SessionRequest) -> CreatedSession:
        """Reserve and launch; returns once the session's sshd answers."""
        return self.launch(self.reserve(request))

    def reserve(self, request: SessionRequest) -> Reservation:
        """Check the request and commit the session row with its grants (fast, no runtime
        work but a ping); the session is ``starting`` until ``launch`` runs."""
        request = with_workload(request, self.inventory.devices)  # its workload's share
        user_id = validate_user_id(request.user_id)
        ttl = checked_ttl(
            self.settings,
            self.settings.default_ttl_minutes
            if request.ttl_minutes is None
            else request.ttl_minutes,
        )
        request, image = self._environment(request)
        cpus, memory = checked_limits(self.settings, request.cpus, request.memory)
        if request.snapshot_image is not None and not (
            self.allow_snapshot is not None
            and self.allow_snapshot(user_id, request.snapshot_image, image)
        ):
            raise InvalidRequest(
                f"image {request.snapshot_image!r} is not a snapshot of {user_id}'s made "
                f"from {image}; only a restore of one's own session starts from a snapshot"
            )
        check_gpu_request(request.gpu)
        checked_idle_timeout(
            request.idle_timeout_minutes,
            self.settings.idle_timeout_max,
            self.settings.max_ttl_minutes,
        )
        keys = normalize_public_keys(request.ssh_public_keys or [])
        if request.ssh_public_keys is not None and not keys:
            raise InvalidRequest("ssh_public_keys is empty: give at least one key or omit it")
        self.runtime.ping()  # refuse before writing anything when the runtime is down
        session_id = str(uuid.uuid4())
        with self._busy_lock:
            self._busy.add(session_id)
        try:
            row, allocations, private_key = self._reserve(
                session_id, user_id, request, ttl, image, cpus, memory, keys
            )
        except BaseException as exc:
            self._not_busy(session_id)
            if isinstance(exc, CapacityExhausted | QuotaExceeded):
                self._demand(request, "refused", exc.message)
            raise
        queued = row.status == SessionStatus.QUEUED
        self._demand(request, "queued" if queued else "started", row.queue_reason)
        notes = tuple(n for a in allocations for n in a.notes)
        return Reservation(row, allocations, private_key, notes)

    def _environment(self, request: SessionRequest) -> tuple[SessionRequest, str]:
        """The request's image, and the request with the environment it starts from
        (and that environment's GPU profile when it asks for none)."""
        if self.choose_environment is None:
            return request, checked_image(self.settings, request.image)
        choice = self.choose_environment(request.user_id, request.image, request.environment)
        gpu = request.gpu
        if choice.default_profile and gpu == GpuRequest():
            gpu = GpuRequest(mig_profile=choice.default_profile)
        return replace(request, environment=choice.environment, gpu=gpu), choice.image

    def launch(self, reservation: Reservation) -> CreatedSession:
        """Start what ``reserve`` committed; on any failure give everything back."""
        row = reservation.session
        if row.status == SessionStatus.QUEUED:  # it waits; the queue launches it later
            self._not_busy(row.id)
            return CreatedSession(row, reservation.private_key, reservation.notes)
        started: list[ContainerState] = []
        try:
            row = self._start(row, reservation.allocations, started)
        except BaseException as exc:
            reason = exc.message if isinstance(exc, SandmanError) else repr(exc)
            log.warning("session %s for %s failed: %s", row.id, row.user_id, reason)
            self.end(row.id, SessionStatus.FAILED, f"creation failed: {reason}")
            # The session may have been ended by a DELETE while its container was
            # still being started; the container it started must not outlive it.
            for state in started:
                with suppress(SandmanError):
                    self.runtime.remove(state.id, 0)
            raise
        finally:
            self._not_busy(row.id)
        return CreatedSession(row, reservation.private_key, reservation.notes)

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
    ) -> tuple[SessionRow, list[Allocation], str | None]:
        """Commit the session row with its GPU units and port, or explain why not; a
        request that asked to wait and does not fit yet is committed ``queued``."""
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
                    now = self.clock()
                    row = SessionRow(
                        id=session_id,
                        user_id=user_id,
                        status=SessionStatus.STARTING.value,
                        image=request.snapshot_image or image,
                        container_name=f"{self.settings.container_prefix}-{user_id}",
                        cpus=cpus,
                        memory=memory,
                        team=request.team,
                        project=request.project,
                        priority=request.priority,
                        labels=dict(request.labels),
                        environment=request.environment,
                        authorized_keys=keys,
                        ttl_minutes=ttl,
                        idle_timeout_minutes=request.idle_timeout_minutes,
                        created_at=now,
                        expires_at=now + timedelta(minutes=ttl),
                        worker_id=self.worker_id,
                        version=0,
                    )
                    try:
                        grant = self._place(db, user_id, request, ttl, image)
                    except (CapacityExhausted, QuotaExceeded) as exc:
                        if isinstance(exc, CapacityExhausted) and request.gpu.mig_profile:
                            asked = request.gpu.mig_profile
                            self.demand.record_asked(asked, self.inventory.devices())
                        if not request.queue or not getattr(exc, "waitable", True):
                            raise
                        devices = self.inventory.devices()
                        for check in self.queue_checks:  # what waiting cannot cure
                            check(db, user_id, request, ttl, image, devices)
                        row.status = SessionStatus.QUEUED.value
                        row.expires_at = now + timedelta(seconds=self.settings.queue_timeout)
                        row.worker_id = None
                        row.queue_request = queue_request(request)
                        row.queue_reason = exc.message
                        db.add(row)
                        db.flush()
                        return row, [], private_key
                    row.ssh_port = grant.port
                    fields = session_gpu_fields(
                        grant.allocations, grant.devices, self.cluster_places
                    )
                    for name, value in fields.items():
                        setattr(row, name, value)
                    db.add(row)
                    db.flush()
                    self._hold(db, row, grant, now)
                return row, grant.allocations, private_key
            except IntegrityError as exc:
                log.info("reservation raced (attempt %d): %s", attempt + 1, exc.orig)
                time.sleep(random.uniform(0, 0.02 * (attempt + 1)))  # let the winner commit
        raise Conflict("could not reserve resources: too many concurrent requests, try again")

    def _demand(self, request: SessionRequest, outcome: str, why: str | None) -> None:
        for hook in self.demand_hooks:
            try:
                hook(request, outcome, why)
            except Exception:
                log.exception("demand hook %r failed", hook)

    def _place(self, db: Db, user_id: str, request: SessionRequest, ttl: int, image: str) -> Grant:
        """Where the request goes now and that every admission check allows it.

        What is held (the claims) is read before what exists (the devices), both
        inside the transaction: an instance an admin destroys meanwhile is either
        still claimed by the admin when the claims are read, or already gone when
        the devices are.
        """
        for check in self.request_checks:
            check(db, user_id, request)
        claims = claims_from_rows(list(db.scalars(select(GpuClaim))))
        devices = self.inventory.devices()
        allocations = plan(
            request.gpu,
            devices,
            claims,
            default_profile=self.settings.default_mig_profile,
            allow_fallback=self.settings.mig_fallback,
            demand=self.demand.weights(),
        )
        self.demand.record_grant(allocations, devices)
        for admit in self.admission_checks:
            admit(db, user_id, request, ttl, image, allocations, devices)
        port = None
        if self.runtime.publishes_ports:
            port = choose_port(
                self.settings.ssh_port_start,
                self.settings.ssh_port_end,
                db.scalars(select(PortClaim.port)),
                self.settings.ssh_bind_address,
            )
        return Grant(allocations, devices, port)

    def _hold(self, db: Db, row: SessionRow, grant: Grant, now: datetime) -> None:
        """Write the grant's claims, and tell ``grant_hooks`` (the cost ledger) in the
        same transaction: a grant and its record commit together or not at all."""
        for allocation in grant.allocations:
            db.add_all(claim_rows(row.id, allocation))
        if grant.port is not None:
            db.add(PortClaim(port=grant.port, session_id=row.id))
        for hook in self.grant_hooks:
            hook(db, row, now)

    # ----------------------------------------------------------------- queue
    def promote(self, session_id: str) -> Reservation | None:
        """Place a queued request now: its row becomes ``starting`` with its grants,
        ready to ``launch``. None when it does not fit yet (or is no longer queued);
        a request a changed quota no longer allows at all is cancelled, saying so."""
        with self._busy_lock:
            self._busy.add(session_id)
        try:
            found = self._promote(session_id)
        except BaseException:
            self._not_busy(session_id)
            raise
        if isinstance(found, Reservation):
            return found
        self._not_busy(session_id)
        if found is not None:
            self.cancel_queued(session_id, found)
        return None

    def _promote(self, session_id: str) -> Reservation | str | None:
        for attempt in range(RESERVE_ATTEMPTS):
            try:
                with self.db.transaction() as db:
                    row = db.get(SessionRow, session_id)
                    if row is None or row.status != SessionStatus.QUEUED:
                        return None
                    request = queued_request(row)
                    image = row.image
                    if self.snapshot_base is not None:  # a restore: its base's policies
                        image = self.snapshot_base(db, row.image) or image
                    try:
                        grant = self._place(db, row.user_id, request, row.ttl_minutes, image)
                    except (CapacityExhausted, QuotaExceeded) as exc:
                        if isinstance(exc, QuotaExceeded) and not exc.waitable:
                            return f"no longer allowed: {exc.message}"
                        if row.queue_reason != exc.message:
                            row.queue_reason = exc.message
                        return None
                    except InvalidRequest as exc:  # the GPUs changed: it can never start
                        return f"can no longer be served here: {exc.message}"
                    now = self.clock()
                    values: dict[str, Any] = {
                        **session_gpu_fields(grant.allocations, grant.devices, self.cluster_places),
                        "expires_at": now + timedelta(minutes=row.ttl_minutes),
                        "worker_id": self.worker_id,
                        "ssh_port": grant.port,
                        "queue_reason": None,
                    }
                    if not transition(
                        db,
                        session_id,
                        [SessionStatus.QUEUED],
                        SessionStatus.STARTING,
                        seen_version=row.version,
                        **values,
                    ):
                        return None  # cancelled meanwhile
                    db.refresh(row)
                    self._hold(db, row, grant, now)
                notes = tuple(n for a in grant.allocations for n in a.notes)
                return Reservation(row, grant.allocations, None, notes)
            except IntegrityError as exc:
                log.info("promotion raced (attempt %d): %s", attempt + 1, exc.orig)
                time.sleep(random.uniform(0, 0.02 * (attempt + 1)))
        return None

    def _start(
        self, row: SessionRow, allocations: list[Allocation], started: list[ContainerState]
    ) -> SessionRow:
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
        with self.db.read() as db:
            user = db.get_one(User, row.user_id)
            uid, gid = user.uid, user.gid
            quota = configured_quota(db, row.user_id, self.settings.workspace_quota)
        host_key = self.host_keys.pair(row.user_id)
        share = session_share(allocations)
        limit_session(self.mps, share, self.inventory, uid)
        session = SessionContainer(
            session_id=row.id,
            user_id=row.user_id,
            uid=uid,
            gid=gid,
            image=row.image,
            name=row.container_name,
            deployment_id=self.deployment_id,
            host_port=row.ssh_port,
            cpus=row.cpus,
            memory=row.memory,
            pids_limit=self.settings.pids_limit,
            shm_size=self.settings.shm_size,
            gpu_uuids=tuple(granted),
            mig_profile=row.mig_profile,
            real_gpus=not self.inventory.simulated,
            authorized_keys=tuple(
                self.container_keys(list(row.authorized_keys))
                + ([self.session_key(row.id)] if self.session_key else [])
            ),
            host_key=host_key,
            trusted_ca_keys=tuple(self.trusted_ca_keys() if self.trusted_ca_keys else ()),
            workspace_quota=quota,
            gpu_share=share,
            apps_secret=self.apps_secret(row.id) if self.apps_secret else None,
            gpu_model=self._granted_model(allocations),
        )
        self._clear_stale_container(row.container_name, row.id)
        state = self.runtime.start(session_launch(session))
        started.append(state)
        if state.endpoint is None:
            raise RuntimeFailure("the runtime reported no address for the session's sshd")
        endpoint: Endpoint = state.endpoint
        placed: dict[str, Any] = {}
        if self.cluster_places and allocations and state.node:
            placed["placement_reason"] = cluster_placement(state.node)
        with self.db.transaction() as db:
            if not transition(
                db,
                row.id,
                [SessionStatus.STARTING],
                **placed,
                container_id=state.id,
                container_ip=state.ip_address,
                endpoint_host=endpoint.host,
                endpoint_port=endpoint.port,
                host_public_key=host_key[1],
                gpu_uuid=",".join(granted) or None,
            ):
                raise Conflict(f"session {row.id} was ended while starting")

        def why_not_alive() -> str | None:
            found = self.runtime.inspect(state.id)
            if found is None:
                return "the container vanished while starting"
            if not found.running:
                logs = self.runtime.logs(state.id, tail=20).strip()
                return f"the container exited ({found.status}, code {found.exit_code}): {logs}"
            return None

        wait_for_sshd(
            endpoint.host,
            endpoint.port,
            self.settings.start_timeout,
            alive=why_not_alive,
            probe=self.probe,
        )
        now = self.clock()
        with self.db.transaction() as db:
            if not transition(
                db,
                row.id,
                [SessionStatus.STARTING],
                SessionStatus.RUNNING,
                started_at=now,
                last_activity=now,
            ):
                raise Conflict(f"session {row.id} was ended while starting")
            current = db.get_one(SessionRow, row.id)
        self._run_hooks(self.start_hooks, current.user_id, current.id, "running")
        return current

    def _granted_model(self, allocations: list[Allocation]) -> str | None:
        """The model of the GPU a grant is on, for runtimes that place sessions by model
        (Kubernetes' node selectors); other runtimes do not ask the inventory again."""
        if not self.cluster_places or not allocations:
            return None
        parents = {a.gpu_uuid for a in allocations}
        models = {d.model for d in self.inventory.devices() if d.uuid in parents}
        return models.pop() if len(models) == 1 else None

    def container_keys(self, user_keys: list[str]) -> list[str]:
        """Whose keys the container's sshd authorizes: the user's (direct mode), and the
        gateway's only where it does not log in with a CA certificate."""
        mode = self.settings.ssh_mode
        keys = list(user_keys) if mode in ("direct", "both") else []
        if mode in ("gateway", "both") and self.trusted_ca_keys is None:
            if not self.gateway_key:
                raise RuntimeFailure("the gateway's identity key is not loaded")
            keys.append(self.gateway_key)
        return keys

    # ------------------------------------------------------------- lifecycle
    def touch(self, session_id: str) -> None:
        """Activity Sandman sees from outside the session (channel data through the
        gateway, a web app through the portal's proxy): ``last_activity`` moves to now."""
        with self.db.transaction() as db:
            db.execute(
                update(SessionRow)
                .where(SessionRow.id == session_id, SessionRow.status == SessionStatus.RUNNING)
                .values(last_activity=self.clock())
            )

    def extend(self, session_id: str, ttl_minutes: int) -> SessionRow:
        """A new TTL from now; asking for one is also activity (idle reclaim). Every
        ``extension_checks`` (quotas' ``max_ttl_minutes``) must allow it."""
        ttl = checked_ttl(self.settings, ttl_minutes)
        with self.db.transaction() as db:
            row = db.get(SessionRow, session_id)
            if row is None:
                raise NotFound(f"no session {session_id!r}")
            for check in self.extension_checks:
                check(row, ttl)
            if not transition(
                db,
                session_id,
                ENDABLE,
                ttl_minutes=ttl,
                expires_at=self.clock() + timedelta(minutes=ttl),
                last_activity=self.clock(),
            ):
                raise Conflict(f"session {session_id} is {row.status}; only active ones extend")
            db.refresh(row)
            return row

    # --------------------------------------------------------------- helpers
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

    def ensure_user(self, db: Db, user_id: str) -> User:
        """The user, made with the next free uid (or the one their workspace already
        has) when Sandman does not know them. Processes sharing one database may make
        the same user, or give away the same uid, at once: the loser's insert fails in
        a savepoint and it reads again, so the caller's transaction goes on."""
        for attempt in range(USER_ATTEMPTS):
            user = db.get(User, user_id)
            if user is not None:
                return user
            taken = set(db.scalars(select(User.uid)))
            adopted = self.runtime.workspace_owner(user_id)
            if adopted is not None and adopted >= self.settings.uid_base and adopted not in taken:
                uid = adopted
            else:
                uid = max([self.settings.uid_base - 1, *taken]) + 1
            user = User(user_id=user_id, uid=uid, gid=uid, ssh_public_keys=[], created_at=utcnow())
            try:
                with db.begin_nested():
                    db.add(user)
            except IntegrityError as exc:
                log.info("creating user %s raced (attempt %d): %s", user_id, attempt + 1, exc.orig)
                time.sleep(random.uniform(0, 0.02 * (attempt + 1)))  # let the others commit
                continue
            return user
        raise Conflict(f"could not create user {user_id}: too many at once, try again")

    def _refuse_second_session(self, db: Db, user_id: str) -> None:
        existing = db.scalars(
            select(SessionRow).where(SessionRow.user_id == user_id, SessionRow.status.in_(CURRENT))
        ).first()
        if existing is not None and existing.status == SessionStatus.QUEUED:
            raise SessionConflict(
                f"user {user_id} already has a queued request {existing.id} "
                f"(since {existing.created_at.isoformat()}); cancel it with DELETE first"
            )
        if existing is not None:
            raise SessionConflict(
                f"user {user_id} already has an active session {existing.id} "
                f"({existing.status}, expires {existing.expires_at.isoformat()}); "
                "delete it or extend it instead"
            )


__all__ = ["CreatedSession", "Grant", "Reservation", "SessionRequest", "SessionService"]
