"""The collector: one pass over the GPUs and the active sessions every interval,
in a background thread, published as an immutable snapshot.

Readers (``/metrics``, the history, idle decisions) only ever read the latest
snapshot, so a slow driver or a busy engine delays the next measurement, never a
request.

A pass costs one read of the active sessions and of the claims, one inventory
read, one sampler call, and one engine statistics read per running session, at
most ``stats_workers`` at a time. Docker answers a statistics read once its
next one-second sample is taken, so the reads wait rather than work: 64 at a
time keep a pass over 448 sessions near 7 s of waiting and little CPU, inside
the default 15 s interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Protocol

from sandman.errors import RuntimeUnavailable, SandmanError
from sandman.gpu.planner import free_summary
from sandman.gpu.types import Claim, GpuDevice
from sandman.observe.measure import (
    CpuReading,
    cpu_percent,
    session_gpu_active,
    simulated_activity,
)
from sandman.observe.samples import (
    GpuSample,
    HeldDevice,
    MetricsSnapshot,
    SessionActivity,
    SessionGpuReader,
    SessionInfo,
)
from sandman.runtime.base import ContainerStats
from sandman.store.models import Session as SessionRow
from sandman.store.models import utcnow

__all__ = ["GpuSampler", "MetricsCollector", "holders_of", "mig_allocation"]

log = logging.getLogger(__name__)

# devices, activity of simulated devices (UUID -> 0-1), time -> samples
GpuSampler = Callable[[Sequence[GpuDevice], Mapping[str, float], datetime], list[GpuSample]]


class _Sessions(Protocol):
    """What the collector reads of the sessions (``SessionService`` has it)."""

    def list_sessions(
        self, status: str = "active", user_id: str | None = None
    ) -> list[SessionRow]: ...

    def claims(self) -> list[Claim]: ...


class _Inventory(Protocol):
    backend: str
    simulated: bool

    def devices(self) -> list[GpuDevice]: ...


class _Stats(Protocol):
    def stats(self, name_or_id: str) -> ContainerStats | None: ...


def holders_of(
    rows: Sequence[SessionRow], devices: Sequence[GpuDevice], cluster_places: bool = False
) -> list[SessionInfo]:
    """Active sessions with their devices named as GPU series name them (pure).

    With ``cluster_places`` (Kubernetes) the devices are the inventory's stand-ins
    for units a node advertises, not the GPU and instance the kubelet picked: the
    physical GPU and its instance id stay empty (unknown) rather than joining the
    session to a device it may not hold."""
    where: dict[str, HeldDevice] = {}
    for device in devices:
        where[device.uuid] = HeldDevice(device.uuid, device.uuid)
        for inst in device.instances:
            where[inst.uuid] = HeldDevice(
                inst.uuid, device.uuid, inst.gpu_instance_id, inst.profile
            )
    found = []
    for row in rows:
        held = []
        for uuid in filter(None, (row.gpu_uuid or "").split(",")):
            known = where.get(uuid)
            if cluster_places:
                known = HeldDevice(uuid, "", None, row.mig_profile)
            held.append(
                known or HeldDevice(uuid, row.gpu_parent_uuid or uuid, None, row.mig_profile)
            )
        found.append(
            SessionInfo(
                session_id=row.id,
                user_id=row.user_id,
                status=row.status,
                image=row.image,
                team=row.team,
                project=row.project,
                devices=tuple(held),
            )
        )
    return found


def mig_allocation(
    devices: Sequence[GpuDevice], claims: Sequence[Claim], holders: Sequence[SessionInfo]
) -> dict[str, float]:
    """Per MIG profile: of the instances held now or grantable now (free ones on static
    GPUs, room for new ones on dynamic GPUs), the share held (pure)."""
    held: dict[str, int] = {}
    for holder in holders:
        for device in holder.devices:
            if device.mig_profile:
                held[device.mig_profile] = held.get(device.mig_profile, 0) + 1
    grantable: dict[str, int] = {}
    gpus = free_summary(devices, claims)["gpus"]
    assert isinstance(gpus, dict)
    for entry in gpus.values():
        for inst in entry.get("free_instances", ()):
            grantable[inst["profile"]] = grantable.get(inst["profile"], 0) + 1
        for profile, count in entry.get("creatable", {}).items():
            grantable[profile] = grantable.get(profile, 0) + count
    found = {}
    for profile in sorted(set(held) | set(grantable)):
        total = held.get(profile, 0) + grantable.get(profile, 0)
        found[profile] = held.get(profile, 0) / total if total else 0.0
    return found


class MetricsCollector:
    """Takes a snapshot every pass (``collect``) and keeps the latest for readers."""

    def __init__(
        self,
        sessions: _Sessions,
        inventory: _Inventory,
        runtime: _Stats,
        sampler: GpuSampler,
        stats_workers: int = 64,
        session_gpu: SessionGpuReader | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.inventory = inventory
        self.runtime = runtime
        self.sampler = sampler
        self.session_gpu = session_gpu  # per-session GPU activity (Kubernetes), if any
        self.clock = clock
        self.monotonic = monotonic
        self.listeners: list[Callable[[MetricsSnapshot], object]] = []  # each pass's end
        self._pool = ThreadPoolExecutor(stats_workers, thread_name_prefix="sandman-stats")
        self._lock = threading.Lock()
        self._latest: MetricsSnapshot | None = None
        self._readings: dict[str, CpuReading] = {}  # session id -> its last CPU reading

    # ---- readers ---------------------------------------------------------------

    def latest(self) -> MetricsSnapshot | None:
        with self._lock:
            return self._latest

    def activity(self, session_id: str) -> SessionActivity | None:
        snapshot = self.latest()
        return None if snapshot is None else snapshot.sessions.get(session_id)

    def publish(self, snapshot: MetricsSnapshot) -> None:
        """Tell the listeners, then make ``snapshot`` the one readers see: ``/metrics``'
        text for it is then ready before the first scrape can ask for it."""
        for listener in self.listeners:
            try:
                listener(snapshot)
            except Exception:
                log.exception("a metrics listener failed")
        with self._lock:
            self._latest = snapshot

    # ---- a pass ------------------------------------------------------------------

    def collect(self) -> MetricsSnapshot:
        started = self.monotonic()
        now = self.clock()
        rows = self.sessions.list_sessions("active")
        devices = self.inventory.devices()
        holders = holders_of(rows, devices, self.inventory.backend == "kubernetes")
        cpu = self._cpu([row for row in rows if row.status == "running"])
        activity = simulated_activity(holders, cpu) if self.inventory.simulated else {}
        gpus = self.sampler(devices, activity, now)
        by_uuid = {sample.uuid: sample for sample in gpus}
        read = self._session_gpu(rows, holders)
        sessions = {}
        for h in holders:
            found = read.get(h.session_id)
            if self.session_gpu is None or not h.devices:
                active, unknown = session_gpu_active(h, by_uuid), None
            elif isinstance(found, str) or found is None:
                active, unknown = None, found or "no GPU reading for it"
            else:
                active, unknown = found, None
            sessions[h.session_id] = SessionActivity(
                h.session_id, active, cpu.get(h.session_id), now, gpu_unknown=unknown
            )
        by_status: dict[str, int] = {}
        for row in rows:
            by_status[row.status] = by_status.get(row.status, 0) + 1
        snapshot = MetricsSnapshot(
            at=now,
            gpus=tuple(gpus),
            sessions=sessions,
            collect_seconds=round(self.monotonic() - started, 6),
            holders=tuple(holders),
            sessions_by_status=by_status,
            mig_allocation=mig_allocation(devices, self.sessions.claims(), holders),
        )
        self.publish(snapshot)
        return snapshot

    def _session_gpu(
        self, rows: Sequence[SessionRow], holders: Sequence[SessionInfo]
    ) -> Mapping[str, float | str]:
        """The per-session GPU source's answer for the sessions holding a GPU; a source
        that fails makes each of them unknown, with its error as the reason."""
        if self.session_gpu is None:
            return {}
        holding = {h.session_id for h in holders if h.devices}
        pods = {row.id: row.container_id or row.container_name for row in rows if row.id in holding}
        if not pods:
            return {}
        try:
            return self.session_gpu(pods)
        except Exception as exc:
            log.warning("reading sessions' GPU activity failed: %s", exc)
            return {sid: f"reading GPU activity failed: {exc}" for sid in pods}

    def _cpu(self, rows: Sequence[SessionRow]) -> dict[str, float | None]:
        """Each running session's CPU use since the last pass (percent of one core)."""

        def read(row: SessionRow) -> tuple[str, ContainerStats | None, float]:
            try:
                stats = self.runtime.stats(row.container_id or row.container_name)
            except RuntimeUnavailable:
                raise
            except SandmanError as exc:
                log.debug("statistics of session %s: %s", row.id, exc.message)
                stats = None
            return row.id, stats, self.monotonic()

        try:
            results = list(self._pool.map(read, rows))
        except RuntimeUnavailable as exc:
            log.warning("no container statistics this pass: %s", exc.message)
            results = []
        found: dict[str, float | None] = {}
        readings: dict[str, CpuReading] = {}
        for session_id, stats, at in results:
            if stats is None:
                continue
            reading = CpuReading(stats.cpu_seconds, at)
            readings[session_id] = reading
            percent = cpu_percent(self._readings.get(session_id), reading)
            found[session_id] = percent if percent is not None else stats.cpu_percent
        self._readings = readings  # sessions that ended are forgotten
        return found

    def close(self) -> None:
        self._pool.shutdown(wait=False)
