"""The capacity view: per profile, what the GPUs hold, the most held at once, and
the demand that started, waited or was refused. Pure arithmetic over plain records;
``accounting.demand`` reads them.

Everything is counted in slices (sevenths of a GPU, ``policy.units``). A profile's
capacity is how many such instances the GPUs can hold: on a static GPU the
instances that exist, on a dynamic one as many as fit on it alone (the profiles of
a dynamic GPU share its slices, so these do not add up across profiles). Whole GPUs
count under ``gpu``, replicas of shared GPUs under ``shared``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sandman.gpu.catalogue import GpuModel, find_model, nominal_gb
from sandman.gpu.types import GpuDevice, MigMode
from sandman.policy.units import WHOLE, grant_slices, profile_slices

WHOLE_GPU = "gpu"
SHARED = "shared"
OUTCOMES = ("started", "queued", "refused")
# A quota's refusal names the quota it breaks: "... (max_slices)" (policy.quotas.check).
_QUOTA = re.compile(r"\((?:max|allowed)_[a-z_]+\)")


def refused_by_quota(reason: str | None) -> bool:
    """Whether a refusal was a quota's (no layout would serve it), not a lack of room."""
    return reason is not None and _QUOTA.search(reason) is not None


@dataclass(frozen=True)
class Held:
    """One session's grant over time: what it held (``key``, ``slices``) and when."""

    key: str
    slices: float
    start: datetime
    end: datetime | None  # None: still held


@dataclass(frozen=True)
class Asked:
    """One request of the demand log."""

    at: datetime
    key: str
    slices: float
    ttl_minutes: int
    outcome: str  # started | queued | refused
    reason: str | None = None

    @property
    def slice_hours(self) -> float:
        return self.slices * self.ttl_minutes / 60


@dataclass
class ProfileRow:
    """One line of the view."""

    key: str
    slices_each: float
    capacity_instances: int = 0
    capacity_slices: float = 0.0
    peak_slices: float = 0.0
    served_slice_hours: float = 0.0
    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    refused_by_quota: int = 0
    asked_slice_hours: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(OUTCOMES, 0.0)
    )


@dataclass(frozen=True)
class CapacityView:
    since: datetime
    until: datetime
    profiles: tuple[ProfileRow, ...]
    total_slices: float  # every GPU here, in slices
    peak_slices: float  # the most held at once, all profiles together
    served_slice_hours: float
    advice: tuple[str, ...]


def ask_key(
    profile: str | None,
    gpu_count: int | None,
    gpu_memory_gb: float | None,
    shared: bool,
    models: Sequence[GpuModel],
) -> str | None:
    """The row a request falls under; None when it asked for no GPU. A memory size
    counts as the smallest profile here with that much (``gpu`` if none has)."""
    if gpu_count is not None:
        return WHOLE_GPU if gpu_count > 0 else None
    if shared:
        return SHARED
    if profile is not None:
        return profile
    if gpu_memory_gb is not None:
        fits = [
            (p.memory_mib, p.name)
            for m in models
            for p in m.profiles
            if not p.media and nominal_gb(p.name) >= gpu_memory_gb
        ]
        return min(fits)[1] if fits else WHOLE_GPU
    return None


def held_of(
    mig_profile: str | None,
    gpu_share: float | None,
    gpu_uuid: str | None,
    gpu_name: str | None,
    start: datetime,
    end: datetime | None,
) -> Held | None:
    """What a session row held, or None when it held no GPU."""
    if not gpu_uuid:
        return None
    if gpu_share is not None:
        return Held(SHARED, grant_slices(gpu_name, None, gpu_share), start, end)
    if mig_profile is not None:
        return Held(mig_profile, grant_slices(gpu_name, mig_profile), start, end)
    count = len([u for u in gpu_uuid.split(",") if u.strip()])
    return Held(WHOLE_GPU, WHOLE * count, start, end)


def capacity_of(devices: Iterable[GpuDevice]) -> dict[str, tuple[int, float]]:
    """Per key: (instances, slices) the GPUs can hold (see the module's docstring)."""
    found: dict[str, tuple[int, float]] = {}

    def add(key: str, instances: int, slices: float) -> None:
        n, s = found.get(key, (0, 0.0))
        found[key] = (n + instances, s + slices)

    for device in devices:
        model = find_model(device.model)
        if device.mig_mode is MigMode.DISABLED or model is None or not model.mig_capable:
            add(WHOLE_GPU, 1, WHOLE)
            if device.sharing is not None:
                add(SHARED, device.sharing.replicas, WHOLE)
        elif device.mig_mode is MigMode.STATIC:
            for instance in device.instances:
                if model.profile(instance.profile) is not None:
                    add(instance.profile, 1, profile_slices(model, instance.profile))
        else:
            for p in model.profiles:
                n = min(len(p.starts), p.max_count)
                add(p.name, n, n * profile_slices(model, p.name))
    return found


def peak(held: Iterable[Held], since: datetime, until: datetime) -> float:
    """The most slices held at once within [since, until]."""
    events: list[tuple[datetime, int, float]] = []
    for h in held:
        start = max(h.start, since)
        end = until if h.end is None else min(h.end, until)
        if start < end:
            events.append((start, 1, h.slices))
            events.append((end, 0, -h.slices))  # an end before a start at the same time
    events.sort(key=lambda e: (e[0], e[1]))
    now = best = 0.0
    for _, _, delta in events:
        now += delta
        best = max(best, now)
    return best


def hours_within(h: Held, since: datetime, until: datetime) -> float:
    start = max(h.start, since)
    end = until if h.end is None else min(h.end, until)
    return max(0.0, (end - start).total_seconds() / 3600)


def _each(key: str, devices: Sequence[GpuDevice]) -> float:
    """What one instance of ``key`` counts."""
    if key == WHOLE_GPU:
        return WHOLE
    if key == SHARED:
        shares = [d.sharing.share for d in devices if d.sharing is not None]
        return min(shares, default=1.0) * WHOLE
    for d in devices:
        model = find_model(d.model)
        if model is not None and model.profile(key) is not None:
            return profile_slices(model, key)
    return WHOLE


def _order(row: ProfileRow) -> tuple[int, float, str]:
    kind = 0 if row.key not in (WHOLE_GPU, SHARED) else 1 if row.key == WHOLE_GPU else 2
    return (kind, -row.slices_each, row.key)


def capacity_view(
    devices: Sequence[GpuDevice],
    held: Sequence[Held],
    asked: Sequence[Asked],
    since: datetime,
    until: datetime,
    advice: Sequence[str] = (),
) -> CapacityView:
    """The view over [since, until]: capacity now, the peak held, and the demand."""
    rows: dict[str, ProfileRow] = {}

    def row(key: str) -> ProfileRow:
        if key not in rows:
            rows[key] = ProfileRow(key, _each(key, devices))
        return rows[key]

    for key, (instances, slices) in capacity_of(devices).items():
        r = row(key)
        r.capacity_instances, r.capacity_slices = instances, slices
    by_key: dict[str, list[Held]] = defaultdict(list)
    for h in held:
        by_key[h.key].append(h)
    for key, grants in by_key.items():
        r = row(key)
        r.peak_slices = peak(grants, since, until)
        r.served_slice_hours = sum(h.slices * hours_within(h, since, until) for h in grants)
    for a in asked:
        if a.outcome not in OUTCOMES or not since <= a.at <= until:
            continue
        r = row(a.key)
        r.requests[a.outcome] += 1
        r.asked_slice_hours[a.outcome] += a.slice_hours
        if a.outcome == "refused" and refused_by_quota(a.reason):
            r.refused_by_quota += 1
    ordered = tuple(sorted(rows.values(), key=_order))
    return CapacityView(
        since=since,
        until=until,
        profiles=ordered,
        total_slices=WHOLE * len(devices),
        peak_slices=peak(held, since, until),
        served_slice_hours=sum(r.served_slice_hours for r in ordered),
        advice=tuple(advice),
    )
