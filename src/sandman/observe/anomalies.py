"""Anomalies no single threshold shows, found in the metrics history.

Three pure detectors over series of (time, value):

- ``hung_job``: a session whose GPU memory stays full while its engine does
  nothing, for half an hour: a job waiting on something that will not come
  (a deadlock, a dead data loader), holding a GPU that others wait for;
- ``smaller_slice``: a session whose GPU activity and memory stayed far below
  its slice for days: the MIG catalogue names the smallest profile of the same
  GPU that would have held its peak, with headroom;
- ``fast_heaters``: a GPU whose temperature climbs much faster than its
  siblings' under the same load: failing cooling, a blocked air flow.

They run as a periodic check (``AnomalyCheck``) rather than as Prometheus rules:
the slice suggestion needs the catalogue, and comparing each GPU with siblings
under a similar load is awkward in PromQL. Each finding is told once a day at
most: the hung job and the slice suggestion to the session's user, the heating
GPU to the admins.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, Protocol

from sandman.gpu.catalogue import GpuModel, MigProfile, find_model
from sandman.observe.samples import MetricsSnapshot
from sandman.store.models import utcnow

log = logging.getLogger(__name__)

Series = Sequence[tuple[datetime, float]]  # oldest first

SAMPLE_GAP = timedelta(minutes=5)  # a longer gap means "not measured", not "unchanged"


def covering(series: Series, since: datetime) -> list[tuple[datetime, float]] | None:
    """The points from ``since`` on, or None when they do not cover the window: the
    first must be near ``since`` and no two more than ``SAMPLE_GAP`` apart."""
    window = [(at, value) for at, value in series if at >= since]
    if not window or window[0][0] - since > SAMPLE_GAP:
        return None
    for (before, _), (after, _) in pairwise(window):
        if after - before > SAMPLE_GAP:
            return None
    return window


# ------------------------------------------------------------------ hung jobs
def hung_job(
    memory_fraction: Series,
    activity: Series,
    now: datetime,
    hold: timedelta = timedelta(minutes=30),
    full: float = 0.9,
    idle: float = 0.01,
) -> bool:
    """Whether, for all of the last ``hold``, GPU memory stayed at least ``full`` (0-1)
    and engine activity at most ``idle`` (0-1)."""
    since = now - hold
    memory = covering(memory_fraction, since)
    active = covering(activity, since)
    if memory is None or active is None:
        return False
    return all(v >= full for _, v in memory) and all(v <= idle for _, v in active)


# ------------------------------------------------------------------ smaller slices
def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def smaller_slice(
    model: GpuModel,
    current: str | None,
    activity: Series,
    memory_used_mib: Series,
    now: datetime,
    days: float = 3.0,
    headroom: float = 1.25,
    busy: float = 0.95,
) -> MigProfile | None:
    """The smallest MIG profile of ``model`` that would have held the session's last
    ``days``, when it is smaller than what it holds (``current``; None: the whole GPU).

    Activity is of the held slice (0-1), so the compute it needed is its ``busy``
    quantile times the slice's compute slices; memory is its peak. Both get
    ``headroom``. Media-engine profiles (``+me``) are never suggested.
    """
    if not model.mig_capable:
        return None
    held = model.profile(current) if current else None
    if current and held is None:
        return None
    compute = held.compute_slices if held else max(p.compute_slices for p in model.profiles)
    memory = held.memory_mib if held else model.memory_mib
    since = now - timedelta(days=days)
    active = covering(activity, since)
    used = covering(memory_used_mib, since)
    if active is None or used is None:
        return None
    need_compute = max(1, math.ceil(quantile([v for _, v in active], busy) * compute * headroom))
    need_memory = max(v for _, v in used) * headroom
    fits = [
        p
        for p in model.profiles
        if not p.media
        and p.compute_slices >= need_compute
        and p.memory_mib >= need_memory
        and (p.memory_mib < memory or p.compute_slices < compute)
        and p.memory_mib <= memory
        and p.compute_slices <= compute
    ]
    if not fits:
        return None
    return min(fits, key=lambda p: (p.memory_slices, p.compute_slices, p.memory_mib))


# ------------------------------------------------------------------ heating
def slope_per_minute(series: Series) -> float | None:
    """The least-squares slope of ``series`` in units per minute; None under 3 points."""
    if len(series) < 3:
        return None
    start = series[0][0]
    xs = [(at - start).total_seconds() / 60 for at, _ in series]
    ys = [value for _, value in series]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


@dataclass(frozen=True)
class Heating:
    gpu_uuid: str
    rate: float  # °C per minute
    siblings_rate: float  # the median of its siblings under a similar load
    load: float  # its mean load over the window, percent


def fast_heaters(
    temperatures: Mapping[str, Series],
    loads: Mapping[str, Series],
    now: datetime,
    window: timedelta = timedelta(minutes=15),
    factor: float = 2.0,
    min_rate: float = 0.3,
    load_tolerance: float = 15.0,
) -> list[Heating]:
    """GPUs whose temperature rose at least ``min_rate`` °C a minute over ``window``,
    more than ``factor`` times the median rise of siblings (GPUs of the same host)
    whose mean load (0-100) was within ``load_tolerance`` points of theirs."""
    since = now - window
    rates: dict[str, float] = {}
    mean_load: dict[str, float] = {}
    for uuid, series in temperatures.items():
        temps = covering(series, since)
        load = covering(loads.get(uuid, ()), since)
        rate = slope_per_minute(temps) if temps else None
        if rate is None or not load:
            continue
        rates[uuid] = rate
        mean_load[uuid] = statistics.fmean(v for _, v in load)
    found = []
    for uuid, rate in sorted(rates.items()):
        siblings = [
            rates[other]
            for other in rates
            if other != uuid and abs(mean_load[other] - mean_load[uuid]) <= load_tolerance
        ]
        if not siblings or rate < min_rate:
            continue
        typical = statistics.median(siblings)
        if rate > factor * max(typical, min_rate / factor):
            found.append(Heating(uuid, round(rate, 3), round(typical, 3), mean_load[uuid]))
    return found


# ------------------------------------------------------------------ the periodic check
class History(Protocol):
    """The metrics history: minutes (``observe.history.Point``) of a session or a GPU."""

    def points(self, kind: str, key: str, since: datetime, until: datetime) -> Sequence[Any]: ...


def series_of(points: Sequence[Any], name: str, scale: float = 1.0) -> list[tuple[datetime, float]]:
    """The minutes of ``points`` where ``name`` was measured, as a series."""
    found = []
    for point in points:
        value = getattr(point, name, None)
        if value is not None:
            found.append((point.minute, float(value) * scale))
    return found


NotifyUser = Callable[[str, str, str, str], object]  # (user, session, subject, text)
NotifyAdmins = Callable[[str, str], object]  # (subject, text)


class AnomalyCheck:
    """Every pass: reads the latest snapshot (who holds what) and the history around
    it, runs the detectors, and tells each finding once a day at most."""

    def __init__(
        self,
        latest: Callable[[], MetricsSnapshot | None],
        history: History,
        notify_user: NotifyUser,
        notify_admins: NotifyAdmins,
        clock: Callable[[], datetime] = utcnow,
        repeat_after: timedelta = timedelta(days=1),
        slice_days: float = 3.0,
    ) -> None:
        self.latest = latest
        self.history = history
        self.notify_user = notify_user
        self.notify_admins = notify_admins
        self.clock = clock
        self.repeat_after = repeat_after
        self.slice_days = slice_days
        self._told: dict[tuple[str, str], datetime] = {}
        self._lock = threading.Lock()

    def _first_time(self, kind: str, key: str, now: datetime) -> bool:
        with self._lock:
            told = self._told.get((kind, key))
            if told is not None and now - told < self.repeat_after:
                return False
            self._told[(kind, key)] = now
            return True

    def run_once(self) -> int:
        """One pass; how many findings were told."""
        snapshot = self.latest()
        if snapshot is None:
            return 0
        now = self.clock()
        told = 0
        by_uuid = {sample.uuid: sample for sample in snapshot.gpus}
        for holder in snapshot.holders:
            devices = [by_uuid[d.uuid] for d in holder.devices if d.uuid in by_uuid]
            if not devices:
                continue
            told += self._check_session(holder, devices, now)
        told += self._check_heating(snapshot, now)
        alive = {h.session_id for h in snapshot.holders} | {s.uuid for s in snapshot.gpus}
        with self._lock:
            self._told = {k: v for k, v in self._told.items() if k[1] in alive}
        return told

    def _check_session(self, holder: Any, devices: list[Any], now: datetime) -> int:
        since = now - timedelta(days=self.slice_days)
        points = self.history.points("session", holder.session_id, since, now)
        activity = series_of(points, "gpu_active")
        total = sum(d.fb_used_mib + d.fb_free_mib for d in devices)
        memory = series_of(points, "fb_used_mib")
        told = 0
        fraction = [(t, v / total) for t, v in memory] if total > 0 else []
        if hung_job(fraction, activity, now) and self._first_time("hung", holder.session_id, now):
            self.notify_user(
                holder.user_id,
                holder.session_id,
                "Your GPU job may be hung",
                f"Session {holder.session_id} has kept its GPU memory full with no GPU "
                "activity for 30 minutes. If a job is stuck (a deadlock, a dead data "
                "loader), stop it: the GPU is held for nothing.",
            )
            told += 1
        profile = holder.devices[0].mig_profile if len(holder.devices) == 1 else None
        model = find_model(devices[0].model)
        if len(devices) == 1 and model is not None:
            smaller = smaller_slice(model, profile, activity, memory, now, days=self.slice_days)
            if smaller is not None and self._first_time("slice", holder.session_id, now):
                held = profile or f"a whole {model.display_name}"
                self.notify_user(
                    holder.user_id,
                    holder.session_id,
                    f"A {smaller.name} slice would do",
                    f"Over the last {self.slice_days:g} days session {holder.session_id} "
                    f"used far less than {held}: its busiest moments and its peak memory "
                    f"fit a {smaller.name} slice with room to spare. Asking for "
                    f'"mig_profile": "{smaller.name}" next time frees the rest for others.',
                )
                told += 1
        return told

    def _check_heating(self, snapshot: MetricsSnapshot, now: datetime) -> int:
        since = now - timedelta(minutes=20)
        temperatures: dict[str, list[tuple[datetime, float]]] = {}
        loads: dict[str, list[tuple[datetime, float]]] = {}
        for sample in snapshot.gpus:
            if sample.is_mig:
                continue
            points = self.history.points("gpu", sample.uuid, since, now)
            temperatures[sample.uuid] = series_of(points, "temperature_c")
            load = series_of(points, "gpu_util") or series_of(points, "gpu_active", 100.0)
            loads[sample.uuid] = load
        told = 0
        names = {s.uuid: f"GPU {s.index} ({s.model})" for s in snapshot.gpus if not s.is_mig}
        for found in fast_heaters(temperatures, loads, now):
            if not self._first_time("heating", found.gpu_uuid, now):
                continue
            self.notify_admins(
                f"{names.get(found.gpu_uuid, found.gpu_uuid)} heats faster than its siblings",
                f"{found.gpu_uuid} warmed {found.rate:.2f} °C a minute over the last 15 "
                f"minutes at {found.load:.0f}% load; its siblings under a similar load "
                f"{found.siblings_rate:.2f} °C a minute. Check its fans and air flow.",
            )
            told += 1
        return told
