"""Usage reports from ledger intervals: pure arithmetic, no I/O.

Each interval (a grant's start and end, to the second) is clipped to the report's
window and to calendar periods in UTC (days, ISO weeks from Monday, months), priced
with ``rates`` and summed per group (user, team, project or GPU model). Two more rows
per period make the totals reconcile to what the capacity cost:

- ``discount``: what ``low`` sessions did not pay (their rows show what they pay);
- ``idle``: the capacity's cost minus the allocated cost (full price), so
  usage + discount + idle = capacity x rate x time, always.

The capacity is a list of snapshots (GPUs per model from a moment on); the first
snapshot also stands for the time before it. Only a full view (operators) gets the
idle row and the capacity figures: a partial view sees only part of the usage.
A running interval counts up to ``now``; the window never reaches past ``now``.

Ended grants may come pre-aggregated instead (``Usage``: the seconds of one grant
at one priority in one period for one group, as the ledger's day rollups sum
them); both kinds are priced once per distinct grant and priority.
"""

from __future__ import annotations

import bisect
import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

from sandman.accounting.rates import Grant, Rates, grant_units, hourly_price, model_key
from sandman.policy.units import WHOLE

HOUR = 3600.0


class GroupBy(StrEnum):
    USER = "user"
    TEAM = "team"
    PROJECT = "project"
    MODEL = "model"


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class RowKind(StrEnum):
    USAGE = "usage"
    DISCOUNT = "discount"
    IDLE = "idle"


@dataclass(frozen=True)
class Interval:
    """One grant from its start to its end (None while it runs)."""

    session_id: str
    start: datetime
    end: datetime | None
    user_id: str
    team: str | None
    project: str | None
    grant: Grant
    priority: str = "normal"


class Usage(NamedTuple):
    """Seconds of one grant at one priority in one period (its first day) for one group,
    all inside the report's window: ended grants, summed before they reach here."""

    period: date
    group: str | None
    grant: Grant
    priority: str
    seconds: float


@dataclass(frozen=True)
class Capacity:
    """The GPUs there are from ``at`` on, per model (catalogue key)."""

    at: datetime
    gpus: Mapping[str, int]


class Row(NamedTuple):  # a tuple: a year of days per user is tens of thousands of rows
    period: date  # the calendar period's first day
    kind: RowKind
    group: str | None  # None for idle and discount, and for sessions without a team...
    gpu_hours: float
    cost: float


@dataclass(frozen=True)
class PeriodTotal:
    period: date
    start: datetime  # the period clipped to the window
    end: datetime
    gpu_hours: float  # allocated
    cost: float  # allocated at full price (what is charged + the discount)
    discount: float
    capacity_gpu_hours: float | None = None  # full views only
    capacity_cost: float | None = None
    idle_cost: float | None = None


@dataclass(frozen=True)
class Report:
    group_by: GroupBy
    period: Period
    start: datetime
    end: datetime  # the window's end as counted: never past now
    currency: str
    full: bool
    rows: list[Row] = field(default_factory=list)
    totals: list[PeriodTotal] = field(default_factory=list)


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def period_start(kind: Period, moment: datetime) -> datetime:
    """The calendar period (UTC) ``moment`` lies in."""
    day = moment.astimezone(UTC).date()
    if kind is Period.WEEK:
        day -= timedelta(days=day.weekday())
    elif kind is Period.MONTH:
        day = day.replace(day=1)
    return day_start(day)


def next_period(kind: Period, start: datetime) -> datetime:
    if kind is Period.DAY:
        return start + timedelta(days=1)
    if kind is Period.WEEK:
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


def periods(kind: Period, start: datetime, end: datetime) -> list[tuple[datetime, datetime, date]]:
    """Calendar periods clipped to [start, end): (span start, span end, period's first day)."""
    spans: list[tuple[datetime, datetime, date]] = []
    cursor = period_start(kind, start)
    while cursor < end:
        following = next_period(kind, cursor)
        spans.append((max(cursor, start), min(following, end), cursor.date()))
        cursor = following
    return spans


def group_of(interval: Interval, group_by: GroupBy) -> str | None:
    if group_by is GroupBy.USER:
        return interval.user_id
    if group_by is GroupBy.TEAM:
        return interval.team
    if group_by is GroupBy.PROJECT:
        return interval.project
    return model_key(interval.grant.gpu_name)


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())


def capacity_in(
    snapshots: Sequence[Capacity], rates: Rates, start: datetime, end: datetime
) -> tuple[float, float]:
    """(GPU-hours, cost) of the capacity over [start, end)."""
    gpu_hours = cost = 0.0
    for i, snapshot in enumerate(snapshots):
        begin = start if i == 0 else max(start, snapshot.at)
        until = min(end, snapshots[i + 1].at) if i + 1 < len(snapshots) else end
        hours = _seconds(begin, until) / HOUR
        if hours <= 0:
            continue
        gpu_hours += hours * sum(snapshot.gpus.values())
        cost += hours * sum(n * rates.gpu_rate(m) for m, n in snapshot.gpus.items())
    return gpu_hours, cost


def day_seconds(start: datetime, end: datetime) -> list[tuple[date, int]]:
    """[start, end) cut at UTC midnights: each day it touches with its seconds (to the
    second, as the ledger keeps time)."""
    cuts: list[tuple[date, int]] = []
    cursor = start.astimezone(UTC)
    end = end.astimezone(UTC)
    while cursor < end:
        following = day_start(cursor.date() + timedelta(days=1))
        seconds = round((min(following, end) - cursor).total_seconds())
        if seconds > 0:
            cuts.append((cursor.date(), seconds))
        cursor = following
    return cuts


@dataclass
class _Sums:
    gpu_hours: float = 0.0
    cost: float = 0.0  # full price
    discount: float = 0.0


class _Prices(dict[tuple[Grant, str], tuple[float, float, float]]):
    """Per (grant, priority), computed once: the full price per hour, the discount per
    hour and the GPUs it counts."""

    def __init__(self, rates: Rates) -> None:
        super().__init__()
        self.rates = rates

    def __missing__(self, key: tuple[Grant, str]) -> tuple[float, float, float]:
        grant, priority = key
        full_price = hourly_price(self.rates, grant)
        price = (full_price, full_price * self.rates.discount(priority), grant_units(grant) / WHOLE)
        self[key] = price
        return price


Sums = dict[tuple[int, str | None], _Sums]  # per (period's index, group)


def _add_intervals(
    sums: Sums,
    prices: _Prices,
    intervals: Iterable[Interval],
    spans: list[tuple[datetime, datetime, date]],
    group_by: GroupBy,
    now: datetime,
) -> None:
    """Each interval clipped to the window (the spans) and to ``now``, cut at the spans."""
    if not spans:
        return
    # Seconds since the epoch from here on: float arithmetic, not datetimes, per interval.
    bounds = [(s.timestamp(), e.timestamp()) for s, e, _ in spans]
    starts = [s for s, _ in bounds]
    first, last, current = bounds[0][0], bounds[-1][1], now.timestamp()
    for interval in intervals:
        begin = max(interval.start.timestamp(), first)
        until = min(interval.end.timestamp() if interval.end else current, last)
        if until <= begin:
            continue
        price = prices[(interval.grant, interval.priority)]
        group = group_of(interval, group_by)
        index = max(0, bisect.bisect_right(starts, begin) - 1)
        while index < len(bounds) and bounds[index][0] < until:
            hours = (min(until, bounds[index][1]) - max(begin, bounds[index][0])) / HOUR
            sums_of = sums[(index, group)]
            sums_of.cost += hours * price[0]
            sums_of.discount += hours * price[1]
            sums_of.gpu_hours += hours * price[2]
            index += 1


def _add_usage(
    sums: Sums,
    prices: _Prices,
    usage: Iterable[Usage],
    spans: list[tuple[datetime, datetime, date]],
) -> None:
    """Pre-summed seconds into their periods (those outside the window are not counted)."""
    index_of = {label: index for index, (_, _, label) in enumerate(spans)}
    for item in usage:
        index = index_of.get(item.period)
        if index is None:
            continue
        price = prices[(item.grant, item.priority)]
        hours = item.seconds / HOUR
        sums_of = sums[(index, item.group)]
        sums_of.cost += hours * price[0]
        sums_of.discount += hours * price[1]
        sums_of.gpu_hours += hours * price[2]


def report(
    intervals: Iterable[Interval],
    capacity: Sequence[Capacity],
    rates: Rates,
    group_by: GroupBy,
    period: Period,
    start: datetime,
    end: datetime,
    now: datetime,
    full: bool = True,
    usage: Iterable[Usage] = (),
) -> Report:
    """The usage of ``intervals`` and of the pre-summed ``usage`` in
    [start, min(end, now)), per period and group."""
    end = max(start, min(end, now))
    spans = periods(period, start, end)
    prices = _Prices(rates)
    sums: Sums = defaultdict(_Sums)
    _add_intervals(sums, prices, intervals, spans, group_by, now)
    _add_usage(sums, prices, usage, spans)
    snapshots = sorted(capacity, key=lambda c: c.at)
    rows: list[Row] = []
    totals: list[PeriodTotal] = []
    by_period: dict[int, list[tuple[str | None, _Sums]]] = defaultdict(list)
    for (index, group), value in sums.items():
        by_period[index].append((group, value))
    for index, (span_start, span_end, label) in enumerate(spans):
        groups = sorted(by_period[index], key=lambda item: (item[0] is None, item[0] or ""))
        gpu_hours = sum(s.gpu_hours for _, s in groups)
        cost = sum(s.cost for _, s in groups)
        discount = sum(s.discount for _, s in groups)
        for group, s in groups:
            rows.append(Row(label, RowKind.USAGE, group, s.gpu_hours, s.cost - s.discount))
        rows.append(Row(label, RowKind.DISCOUNT, None, 0.0, discount))
        total = PeriodTotal(label, span_start, span_end, gpu_hours, cost, discount)
        if full:
            cap_hours, cap_cost = capacity_in(snapshots, rates, span_start, span_end)
            rows.append(Row(label, RowKind.IDLE, None, cap_hours - gpu_hours, cap_cost - cost))
            total = PeriodTotal(
                label, span_start, span_end, gpu_hours, cost, discount,
                cap_hours, cap_cost, cap_cost - cost,
            )  # fmt: skip
        totals.append(total)
    return Report(group_by, period, start, end, rates.currency, full, rows, totals)


CSV_COLUMNS = ("period", "kind", "group", "gpu_hours", "cost", "currency")


def to_csv(result: Report) -> str:
    """The rows as CSV with a header: one table a spreadsheet opens as it is."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in result.rows:
        writer.writerow(
            (
                row.period.isoformat(),
                row.kind.value,
                row.group or "",
                f"{row.gpu_hours:.6f}",
                f"{row.cost:.6f}",
                result.currency,
            )
        )
    return buffer.getvalue()
