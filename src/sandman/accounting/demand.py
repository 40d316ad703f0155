"""The demand log and the reads behind the capacity view and the layout advice.

``DemandLog.record`` is a ``SessionService.demand_hook``: told of every create
request's outcome, it writes one row. It must never fail or slow a create: one
small insert, the GPU list it needs cached for a minute, and every error logged,
never raised. Rows older than the retention are pruned on a timer.

``CapacityReport`` gathers what the pure modules need (GPUs, sessions' grants, the
log) and hands it to ``accounting.capacity`` and ``accounting.advice``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select

from sandman.accounting.advice import Advice, Ask, advise
from sandman.accounting.capacity import (
    Asked,
    CapacityView,
    Held,
    ask_key,
    capacity_view,
    held_of,
    refused_by_quota,
)
from sandman.domain import CURRENT_STATUSES
from sandman.gpu.catalogue import GpuModel, find_model
from sandman.gpu.types import GpuDevice, GpuRequest, MigMode
from sandman.policy.units import request_slices
from sandman.services.requests import SessionRequest
from sandman.store.database import Database
from sandman.store.models import DemandRecord, utcnow
from sandman.store.models import Session as SessionRow

log = logging.getLogger(__name__)
DEVICES_TTL = 60.0  # seconds the GPU list is reused between records
OUTCOMES = frozenset({"started", "queued", "refused"})
CURRENT = frozenset(s.value for s in CURRENT_STATUSES)


@dataclass(frozen=True)
class Demand:
    """One row of the log, as the pure modules read it."""

    at: datetime
    user_id: str
    team: str | None
    project: str | None
    priority: str
    profile: str | None
    gpu_count: int | None
    gpu_memory_gb: float | None
    shared: bool
    whole: bool
    slices: float
    ttl_minutes: int
    outcome: str
    reason: str | None


def effective_gpu(
    gpu: GpuRequest, default_profile: str | None, devices: Sequence[GpuDevice]
) -> GpuRequest:
    """What a request stands for: the default profile when it names nothing, and an
    instance's profile when it names an instance."""
    if gpu.mig_instance_uuid is not None:
        for device in devices:
            for instance in device.instances:
                if instance.uuid == gpu.mig_instance_uuid:
                    return GpuRequest(mig_profile=instance.profile)
        return gpu
    if gpu == GpuRequest() and default_profile is not None:
        return GpuRequest(mig_profile=default_profile)
    return gpu


def demand_row(
    request: SessionRequest,
    outcome: str,
    why: str | None,
    at: datetime,
    devices: Sequence[GpuDevice],
    default_profile: str | None,
    default_ttl: int,
) -> DemandRecord:
    """The log row of one request's outcome (pure)."""
    gpu = effective_gpu(request.gpu, default_profile, devices)
    return DemandRecord(
        at=at,
        user_id=request.user_id[:32],
        team=request.team[:64] if request.team else None,
        project=request.project[:64] if request.project else None,
        priority=str(request.priority)[:8],
        profile=gpu.mig_profile[:32] if gpu.mig_profile else None,
        gpu_count=gpu.gpu_count,
        gpu_memory_gb=gpu.gpu_memory_gb,
        shared=gpu.shared,
        whole=bool(getattr(gpu, "whole", False)),
        slices=request_slices(gpu, devices),
        ttl_minutes=request.ttl_minutes if request.ttl_minutes is not None else default_ttl,
        outcome=outcome,
        reason=why,
    )


class DemandLog:
    def __init__(
        self,
        db: Database,
        devices: Callable[[], list[GpuDevice]],
        default_profile: str | None,
        default_ttl: int,
        retention: timedelta,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.devices = devices
        self.default_profile = default_profile
        self.default_ttl = default_ttl
        self.retention = retention
        self.clock = clock
        self._cached: tuple[float, list[GpuDevice]] | None = None
        self._lock = threading.Lock()

    def _current_devices(self) -> list[GpuDevice]:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > DEVICES_TTL:
                self._cached = (time.monotonic(), self.devices())
            return self._cached[1]

    def record(self, request: SessionRequest, outcome: str, why: str | None) -> None:
        """Write one request's outcome; a failure is logged, never raised."""
        try:
            if outcome not in OUTCOMES:
                raise ValueError(f"unknown outcome {outcome!r}")
            row = demand_row(
                request,
                outcome,
                why,
                self.clock(),
                self._current_devices(),
                self.default_profile,
                self.default_ttl,
            )
            with self.db.transaction() as db:
                db.add(row)
        except Exception:
            log.exception("the demand log could not record a %s request", outcome)

    def prune(self) -> int:
        """Forget requests older than the retention; how many rows went."""
        cutoff = self.clock() - self.retention
        with self.db.transaction() as db:
            result = db.execute(delete(DemandRecord).where(DemandRecord.at < cutoff))
        removed = int(getattr(result, "rowcount", 0) or 0)
        if removed:
            log.info("demand log: pruned %d requests older than %s", removed, cutoff)
        return removed

    def between(self, since: datetime, until: datetime) -> list[Demand]:
        """The requests in [since, until], oldest first."""
        names = [f.name for f in fields(Demand)]
        with self.db.read() as db:
            rows = db.scalars(
                select(DemandRecord)
                .where(DemandRecord.at >= since, DemandRecord.at <= until)
                .order_by(DemandRecord.at, DemandRecord.id)
            )
            return [Demand(**{n: getattr(r, n) for n in names}) for r in rows]


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime


def _end(row: SessionRow, until: datetime) -> datetime | None:
    """When a session let its GPU go: None while it holds it still."""
    if row.ended_at is not None:
        return row.ended_at
    if row.status in CURRENT:
        return None
    return min(row.expires_at, until)


def _ask_of(at: datetime, minutes: float, gpu: dict[str, Any]) -> Ask | None:
    """A MIG request for the replay; None for whole GPUs and shared replicas."""
    if gpu.get("gpu_count") is not None or gpu.get("shared") or gpu.get("whole"):
        return None
    return Ask(at.timestamp(), minutes / 60, gpu.get("mig_profile"), gpu.get("gpu_memory_gb"))


class CapacityReport:
    """The queries behind ``GET /capacity`` and ``GET /gpus/advice``."""

    def __init__(
        self,
        db: Database,
        devices: Callable[[], list[GpuDevice]],
        demand: DemandLog,
        default_profile: str | None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.devices = devices
        self.demand = demand
        self.default_profile = default_profile
        self.clock = clock

    def window(self, days: float) -> Window:
        until = self.clock()
        return Window(until - timedelta(days=days), until)

    def _sessions(self, window: Window) -> list[SessionRow]:
        """Sessions that held a GPU in the window or asked for one in it."""
        with self.db.read() as db:
            rows = db.scalars(
                select(SessionRow).where(
                    or_(
                        SessionRow.created_at >= window.since,
                        SessionRow.ended_at.is_(None),
                        SessionRow.ended_at >= window.since,
                    ),
                    SessionRow.created_at <= window.until,
                )
            )
            found = list(rows)
            for row in found:
                db.expunge(row)
            return found

    def view(self, days: float) -> CapacityView:
        window = self.window(days)
        devices = self.devices()
        models = _models(devices)
        sessions = self._sessions(window)
        held = [h for h in (self._held(row, window) for row in sessions) if h is not None]
        asked = [
            Asked(d.at, key, d.slices, d.ttl_minutes, d.outcome, d.reason)
            for d in self.demand.between(window.since, window.until)
            if (key := _demand_key(d, models)) is not None
        ]
        lines = [a.line for a in self._advise(window, devices, sessions)]
        return capacity_view(devices, held, asked, window.since, window.until, lines)

    def advice(self, days: float) -> tuple[Window, list[Advice]]:
        """The window and, per model with static MIG GPUs, the layout advice."""
        window = self.window(days)
        return window, self._advise(window, self.devices(), self._sessions(window))

    @staticmethod
    def _held(row: SessionRow, window: Window) -> Held | None:
        if row.started_at is None:
            return None
        return held_of(
            row.mig_profile,
            row.gpu_share,
            row.gpu_uuid,
            row.gpu_name,
            row.started_at,
            _end(row, window.until),
        )

    def _asks(self, window: Window, sessions: list[SessionRow]) -> list[Ask]:
        """Served requests (their actual hold), queued ones never served and refusals
        for lack of room (their asked TTL), arrived in the window."""
        asks: list[Ask] = []
        for row in sessions:
            if row.created_at < window.since:
                continue
            if row.started_at is not None and row.mig_profile is not None:
                # its hold: to its end, or to its expiry while it runs
                end = _end(row, window.until) or row.expires_at
                minutes = (end - row.started_at).total_seconds() / 60
                asked = _ask_of(row.created_at, minutes, {"mig_profile": row.mig_profile})
            elif row.started_at is None and row.queue_request is not None:
                gpu = dict(row.queue_request.get("gpu") or {})
                if not any(gpu.get(k) for k in ("mig_profile", "gpu_memory_gb", "gpu_count")):
                    gpu["mig_profile"] = self.default_profile
                asked = _ask_of(row.created_at, row.ttl_minutes, gpu)
            else:
                continue
            if asked is not None:
                asks.append(asked)
        for d in self.demand.between(window.since, window.until):
            if d.outcome == "refused" and not refused_by_quota(d.reason):
                gpu = {
                    "mig_profile": d.profile,
                    "gpu_memory_gb": d.gpu_memory_gb,
                    "gpu_count": d.gpu_count,
                    "shared": d.shared,
                    "whole": d.whole,
                }
                asked = _ask_of(d.at, d.ttl_minutes, gpu)
                if asked is not None:
                    asks.append(asked)
        return asks

    def _advise(
        self, window: Window, devices: list[GpuDevice], sessions: list[SessionRow]
    ) -> list[Advice]:
        static: dict[str, list[list[str]]] = {}
        for device in sorted(devices, key=lambda d: d.index):
            model = find_model(device.model)
            if device.mig_mode is MigMode.STATIC and model is not None and model.mig_capable:
                static.setdefault(model.key, []).append([i.profile for i in device.instances])
        if not static:
            return []
        asks = self._asks(window, sessions)
        out = []
        for key, current in sorted(static.items()):
            model = find_model(key)
            assert model is not None
            out.append(advise(model, current, asks))
        return out


def _models(devices: Sequence[GpuDevice]) -> list[GpuModel]:
    found: dict[str, GpuModel] = {}
    for device in devices:
        model = find_model(device.model)
        if model is not None and device.mig_mode is not MigMode.DISABLED:
            found.setdefault(model.key, model)
    return list(found.values())


def _demand_key(d: Demand, models: Sequence[GpuModel]) -> str | None:
    if d.whole:
        return ask_key(None, 1, None, False, models)
    return ask_key(d.profile, d.gpu_count, d.gpu_memory_gb, d.shared, models)
