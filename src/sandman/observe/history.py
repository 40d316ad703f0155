"""The metrics history's arithmetic (pure): snapshots in, one-minute averages out.

Every snapshot adds one value per field to the minute it falls in; a minute is
handed out once a snapshot of a later minute arrives, so each row is written
once, complete. A field with no value in a minute stays None, not zero: "not
measured" and "idle" are different answers.

What is kept per minute: per physical GPU (``gpu``, by UUID) utilisation, engine
activity, frame buffer used, temperature and power; per session (``session``,
by id) its engine activity, CPU, and the frame buffer and utilisation of the
devices it holds. A MIG instance's own numbers live in its session's rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sandman.errors import InvalidRequest
from sandman.observe.samples import GpuSample, MetricsSnapshot

__all__ = [
    "DEFAULT_WINDOW",
    "MAX_WINDOW",
    "VALUES",
    "MinuteAverages",
    "Point",
    "minute_of",
    "window",
]

DEFAULT_WINDOW = timedelta(hours=24)
MAX_WINDOW = timedelta(days=7)  # 10,080 points: one answer stays a few hundred kB

VALUES = ("gpu_util", "gpu_active", "cpu_percent", "fb_used_mib", "temperature_c", "power_w")


def minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def window(
    since: datetime | None, until: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """The [since, until) a history request asks for: ``until`` defaults to now and
    ``since`` to a day before it; times without a zone are UTC. ``InvalidRequest``
    when ``since`` is not before ``until`` or the window is longer than a week."""
    try:
        end = _utc(until) if until is not None else now
        start = _utc(since) if since is not None else end - DEFAULT_WINDOW
    except (OverflowError, ValueError):
        raise InvalidRequest("since and until must be times between years 1 and 9999") from None
    if start >= end:
        raise InvalidRequest(
            f"since ({start.isoformat()}) must be before until ({end.isoformat()})"
        )
    if end - start > MAX_WINDOW:
        raise InvalidRequest(
            f"at most {MAX_WINDOW.days} days of history per request; ask for several windows"
        )
    return start, end


@dataclass(frozen=True)
class Point:
    """One minute of one session or GPU: the mean of each value, None if unmeasured."""

    kind: str  # "session" | "gpu"
    key: str
    minute: datetime
    samples: int = 0
    gpu_util: float | None = None
    gpu_active: float | None = None
    cpu_percent: float | None = None
    fb_used_mib: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None


@dataclass
class _Sums:
    samples: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, values: dict[str, float | None]) -> None:
        self.samples += 1
        for name, value in values.items():
            if value is not None:
                self.sums[name] = self.sums.get(name, 0.0) + value
                self.counts[name] = self.counts.get(name, 0) + 1

    def mean(self, name: str) -> float | None:
        count = self.counts.get(name)
        return round(self.sums[name] / count, 4) if count else None


def _mean(values: Iterable[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return sum(found) / len(found) if found else None


def _gpu_values(sample: GpuSample) -> dict[str, float | None]:
    return {
        "gpu_util": sample.util_percent,
        "gpu_active": sample.gr_engine_active,
        "fb_used_mib": sample.fb_used_mib,
        "temperature_c": sample.temperature_c,
        "power_w": sample.power_w,
    }


def snapshot_values(snapshot: MetricsSnapshot) -> list[tuple[str, str, dict[str, float | None]]]:
    """(kind, key, values) of everything ``snapshot`` measured."""
    found: list[tuple[str, str, dict[str, float | None]]] = [
        ("gpu", s.uuid, _gpu_values(s)) for s in snapshot.gpus if not s.is_mig
    ]
    by_uuid = {s.uuid: s for s in snapshot.gpus}
    for holder in snapshot.holders:
        measured = snapshot.sessions.get(holder.session_id)
        held = [by_uuid[d.uuid] for d in holder.devices if d.uuid in by_uuid]
        found.append(
            (
                "session",
                holder.session_id,
                {
                    "gpu_util": _mean(s.util_percent for s in held),
                    "gpu_active": measured.gpu_active if measured else None,
                    "cpu_percent": measured.cpu_percent if measured else None,
                    "fb_used_mib": sum(s.fb_used_mib for s in held) if held else None,
                },
            )
        )
    return found


class MinuteAverages:
    """Sums per (kind, key, minute) until the minute is over."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str, datetime], _Sums] = {}

    def add(self, snapshot: MetricsSnapshot) -> None:
        minute = minute_of(snapshot.at)
        for kind, key, values in snapshot_values(snapshot):
            self._open.setdefault((kind, key, minute), _Sums()).add(values)

    def completed(self, now: datetime) -> list[Point]:
        """The minutes before ``now``'s, averaged and forgotten."""
        current = minute_of(now)
        done = sorted(k for k in self._open if k[2] < current)
        points = []
        for kind, key, minute in done:
            sums = self._open.pop((kind, key, minute))
            means = {name: sums.mean(name) for name in VALUES}
            points.append(Point(kind, key, minute, sums.samples, **means))
        return points

    def pending(self) -> list[Point]:
        """The minutes still open, averaged so far (for a shutdown: better than nothing)."""
        points = []
        for (kind, key, minute), sums in sorted(self._open.items()):
            means = {name: sums.mean(name) for name in VALUES}
            points.append(Point(kind, key, minute, sums.samples, **means))
        return points
