"""The wait queue: its order, and an honest ETA by simulating it forward.

Order: priority class, then fair share (each team's usage decayed with a
half-life, as Slurm's multifactor priority does), then age. A request starts as
soon as it fits, so a small one may pass a large one that does not fit yet.

The ETA of a request is when it would start if every running session ended at
its ``expires_at`` and the requests ahead of it started as they fit; None when
nothing that is known to end would ever make room.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sandman.errors import CapacityExhausted, InvalidRequest
from sandman.gpu.planner import claim_for, plan
from sandman.gpu.types import Claim, GpuDevice, GpuRequest
from sandman.policy.quotas import Priority


@dataclass(frozen=True)
class Waiting:
    session_id: str
    user_id: str
    team: str | None
    priority: Priority
    created_at: datetime
    request: GpuRequest
    ttl_minutes: int


@dataclass(frozen=True)
class Holding:
    """A running session as the simulation sees it: what it holds, until when."""

    session_id: str
    expires_at: datetime
    claims: tuple[Claim, ...] = field(default=())


@dataclass(frozen=True)
class UsageEvent:
    """Slice-hours a team (or user) used, ending at ``at``."""

    key: str
    slice_hours: float
    at: datetime


def decayed_usage(
    events: Iterable[UsageEvent], half_life: timedelta, now: datetime
) -> dict[str, float]:
    """Each key's usage, every slice-hour halved per ``half_life`` of age."""
    usage: dict[str, float] = {}
    seconds = half_life.total_seconds()
    for event in events:
        age = max((now - event.at).total_seconds(), 0.0)
        weight = math.pow(0.5, age / seconds) if seconds > 0 else 1.0
        usage[event.key] = usage.get(event.key, 0.0) + event.slice_hours * weight
    return usage


def order(waiting: Iterable[Waiting], usage: Mapping[str, float]) -> list[Waiting]:
    """Priority first, then the lighter user of the GPUs, then the older request."""

    def key(item: Waiting) -> tuple[int, float, datetime, str]:
        share = usage.get(item.team or f"user:{item.user_id}", 0.0)
        return (-item.priority.rank, share, item.created_at, item.session_id)

    return sorted(waiting, key=key)


STEP = timedelta(minutes=1)

Planner = Callable[[GpuRequest, Sequence[Claim]], Sequence[Claim] | None]
"""What a request would hold given the claims already held, or None if it does not
fit (the GPU planner, wrapped)."""


def startable(
    queue: Sequence[Waiting], claims: Sequence[Claim], planner: Planner
) -> list[tuple[Waiting, Sequence[Claim]]]:
    """The requests that start now, in queue order, each placed after those before it."""
    held = list(claims)
    started = []
    refused: set[GpuRequest] = set()  # what did not fit cannot fit once more is held
    for item in queue:
        if item.request in refused:
            continue
        placed = planner(item.request, held)
        if placed is None:
            refused.add(item.request)
            continue
        started.append((item, placed))
        held.extend(placed)
    return started


def simulate(
    queue: Sequence[Waiting],
    running: Sequence[Holding],
    planner: Planner,
    now: datetime,
) -> dict[str, datetime | None]:
    """Each queued request's ETA: run the queue forward through the known ends."""
    pending = list(queue)
    holding = list(running)
    eta: dict[str, datetime | None] = {}
    moment = now
    while pending:
        for item, placed in startable(pending, [c for h in holding for c in h.claims], planner):
            eta[item.session_id] = moment
            pending.remove(item)
            ends = moment + timedelta(minutes=item.ttl_minutes)
            holding.append(Holding(item.session_id, ends, tuple(placed)))
        if not pending:
            break
        later = sorted({h.expires_at for h in holding if h.expires_at > moment})
        if not later:
            for item in pending:
                eta[item.session_id] = None
            break
        # Ends within STEP of the next one are taken together, at the last of them: an
        # ETA may be up to STEP late, never early, and a crowd of sessions ending
        # together is one step of the simulation instead of one per session.
        moment = max(max(e for e in later if e <= later[0] + STEP), moment)
        holding = [h for h in holding if h.expires_at > moment]
    return eta


def position(queue: Sequence[Waiting], session_id: str) -> int | None:
    for index, item in enumerate(queue, start=1):
        if item.session_id == session_id:
            return index
    return None


def planner_for(devices: Sequence[GpuDevice], default_profile: str | None) -> Planner:
    """The GPU planner as the queue uses it: claims the request would hold, or None."""

    def place(request: GpuRequest, claims: Sequence[Claim]) -> Sequence[Claim] | None:
        try:
            allocations = plan(request, devices, claims, default_profile=default_profile)
        except (CapacityExhausted, InvalidRequest):
            return None  # not now, or (refused at admission) never
        return [claim_for(a) for a in allocations]

    return place
