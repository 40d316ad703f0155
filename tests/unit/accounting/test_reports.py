"""Reports are pure: calendar periods in UTC, intervals clipped to them, and rows that
always reconcile to the capacity's cost (usage + discount + idle)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandman.accounting.rates import Grant, Rates, build_rates, hourly_price
from sandman.accounting.reports import (
    Capacity,
    GroupBy,
    Interval,
    Period,
    RowKind,
    Usage,
    day_seconds,
    group_of,
    period_start,
    periods,
    report,
    to_csv,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
A100 = "NVIDIA A100-SXM4-80GB"
RTX = "NVIDIA GeForce RTX 4090"
RATES = build_rates(low_priority_discount=0.5)
CAPACITY = [Capacity(T0 - timedelta(days=400), {"A100-80GB": 2, "RTX-4090": 1})]


def interval(
    start: datetime,
    hours: float | None,
    user: str = "ann",
    team: str | None = "vision",
    grant: Grant = Grant(A100, None, None, 1),
    priority: str = "normal",
) -> Interval:
    end = None if hours is None else start + timedelta(hours=hours)
    return Interval(f"s-{user}-{start}", start, end, user, team, "p1", grant, priority)


def test_calendar_periods_in_utc() -> None:
    start, end = datetime(2026, 1, 28, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)
    months = periods(Period.MONTH, start, end)
    assert [p[2] for p in months] == [date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)]
    assert months[0][0] == start and months[-1][1] == end
    weeks = periods(Period.WEEK, start, end)
    assert weeks[0][2] == date(2026, 1, 26)  # the Monday of the week
    assert all(p[2].weekday() == 0 for p in weeks)
    assert len(periods(Period.DAY, start, end)) == 33


def test_an_interval_over_midnight_splits_between_days() -> None:
    run = interval(datetime(2026, 1, 1, 22, tzinfo=UTC), 4)
    result = report(
        [run],
        CAPACITY,
        RATES,
        GroupBy.USER,
        Period.DAY,
        T0,
        T0 + timedelta(days=2),
        T0 + timedelta(days=9),
    )
    usage = [r for r in result.rows if r.kind is RowKind.USAGE]
    assert [(r.period.day, r.gpu_hours, r.cost) for r in usage] == [(1, 2.0, 12.0), (2, 2.0, 12.0)]
    idle = [r for r in result.rows if r.kind is RowKind.IDLE]
    assert idle[0].gpu_hours == 3 * 24 - 2 and idle[0].cost == 14 * 24 - 12


def test_low_priority_pays_less_and_the_discount_has_its_row() -> None:
    low = interval(T0, 2, user="ben", grant=Grant(RTX, None, None, 1), priority="low")
    result = report(
        [low, interval(T0, 1)], CAPACITY, RATES, GroupBy.USER, Period.MONTH, T0,
        T0 + timedelta(days=31), T0 + timedelta(days=40),
    )  # fmt: skip
    rows = {(r.kind, r.group): r for r in result.rows}
    assert rows[(RowKind.USAGE, "ben")].cost == 2.0  # 2 h x 2.0, half off
    assert rows[(RowKind.USAGE, "ann")].cost == 6.0
    assert rows[(RowKind.DISCOUNT, None)].cost == 2.0
    assert result.totals[0].capacity_cost == 14.0 * 24 * 31
    assert sum(r.cost for r in result.rows) == pytest.approx(14.0 * 24 * 31)


def test_a_running_interval_counts_up_to_now_and_the_window_stops_at_now() -> None:
    now = T0 + timedelta(hours=5)
    result = report(
        [interval(T0 + timedelta(hours=1), None)], CAPACITY, RATES, GroupBy.TEAM, Period.DAY,
        T0, T0 + timedelta(days=1), now,
    )  # fmt: skip
    assert result.end == now
    assert result.rows[0].group == "vision" and result.rows[0].gpu_hours == 4.0
    assert result.totals[0].capacity_gpu_hours == 15.0


def test_a_partial_view_has_no_idle_row() -> None:
    result = report(
        [interval(T0, 1)], [], RATES, GroupBy.PROJECT, Period.MONTH, T0, T0 + timedelta(days=1),
        T0 + timedelta(days=3), full=False,
    )  # fmt: skip
    assert [r.kind for r in result.rows] == [RowKind.USAGE, RowKind.DISCOUNT]
    assert result.totals[0].capacity_cost is None
    text = to_csv(result)
    assert text.splitlines()[0] == "period,kind,group,gpu_hours,cost,currency"
    assert text.splitlines()[1] == "2026-01-01,usage,p1,1.000000,6.000000,USD"


GRANTS = st.sampled_from(
    [
        Grant(A100, None, None, 1),
        Grant(A100, "1g.10gb", None, 1),
        Grant(A100, "3g.40gb", None, 2),
        Grant(RTX, None, 0.5, 1),
        Grant(RTX, None, None, 1),
        Grant("NVIDIA H100 80GB HBM3", "2g.20gb", None, 1),
    ]
)
INTERVALS = st.lists(
    st.builds(
        interval,
        start=st.integers(0, 90 * 86400).map(lambda s: T0 + timedelta(seconds=s)),
        hours=st.one_of(st.none(), st.integers(0, 40 * 86400).map(lambda s: s / 3600)),
        user=st.sampled_from(["ann", "ben", "cid"]),
        team=st.sampled_from(["vision", "nlp", None]),
        grant=GRANTS,
        priority=st.sampled_from(["low", "normal", "high"]),
    ),
    max_size=30,
)
CAPACITIES = st.lists(
    st.builds(
        Capacity,
        at=st.integers(-10, 120).map(lambda d: T0 + timedelta(days=d)),
        gpus=st.dictionaries(
            st.sampled_from(["A100-80GB", "RTX-4090", "H100-80GB"]), st.integers(0, 8)
        ),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda c: c.at,
)


def _hours(run: Interval, start: datetime, end: datetime, now: datetime) -> float:
    begin, until = max(run.start, start), min(run.end or now, end, now)
    return max(0.0, (until - begin).total_seconds() / 3600)


@settings(max_examples=150, deadline=None)
@given(
    intervals=INTERVALS,
    capacity=CAPACITIES,
    group_by=st.sampled_from(list(GroupBy)),
    period=st.sampled_from(list(Period)),
    window=st.tuples(st.integers(-5, 100), st.integers(1, 60)),
    now_day=st.integers(0, 150),
)
def test_the_ledger_always_reconciles_to_capacity_times_rate_times_time(
    intervals: list[Interval],
    capacity: list[Capacity],
    group_by: GroupBy,
    period: Period,
    window: tuple[int, int],
    now_day: int,
) -> None:
    start = T0 + timedelta(days=window[0])
    end = start + timedelta(days=window[1])
    now = T0 + timedelta(days=now_day, seconds=1234)
    result = report(intervals, capacity, RATES, group_by, period, start, end, now)
    # Every row of a period adds up to what the capacity cost in it.
    for total in result.totals:
        rows = [r for r in result.rows if r.period == total.period]
        assert total.capacity_cost is not None
        assert sum(r.cost for r in rows) == pytest.approx(total.capacity_cost, abs=1e-6)
        assert total.cost + (total.idle_cost or 0) == pytest.approx(total.capacity_cost, abs=1e-6)
    # ... and the whole window's capacity: the periods tile it, none twice, none lost.
    counted = sum((t.end - t.start).total_seconds() for t in result.totals)
    assert counted == max(0.0, (min(end, now) - start).total_seconds())
    # Every interval is counted once, whole, however the periods cut it.
    expected = sum(hourly_price(RATES, r.grant) * _hours(r, start, end, now) for r in intervals)
    charged = sum(r.cost for r in result.rows if r.kind is not RowKind.IDLE)
    assert charged == pytest.approx(expected, abs=1e-6)


def test_rates_with_no_capacity_make_idle_negative_not_lost() -> None:
    empty = Rates()
    result = report(
        [interval(T0, 1)],
        [],
        empty,
        GroupBy.USER,
        Period.DAY,
        T0,
        T0 + timedelta(days=1),
        T0 + timedelta(days=1),
    )
    assert sum(r.cost for r in result.rows) == 0


def test_an_interval_is_cut_at_utc_midnights_to_the_second() -> None:
    start = datetime(2026, 1, 30, 23, 59, 30, tzinfo=UTC)
    assert day_seconds(start, start + timedelta(days=1, seconds=60)) == [
        (date(2026, 1, 30), 30),
        (date(2026, 1, 31), 86400),
        (date(2026, 2, 1), 30),
    ]
    assert day_seconds(start, start) == []


def _summed(
    ended: list[Interval], group_by: GroupBy, period: Period, start: datetime, end: datetime
) -> list[Usage]:
    """What the ledger's day rollup gives for ``ended``: the seconds of the days that
    begin in [start, end), summed per period, group and grant."""
    seconds: dict[tuple[date, str | None, Grant, str], float] = defaultdict(float)
    for run in ended:
        assert run.end is not None
        for day, count in day_seconds(run.start, run.end):
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            if start <= moment < end:
                label = period_start(period, moment).date()
                seconds[(label, group_of(run, group_by), run.grant, run.priority)] += count
    return [Usage(*key, value) for key, value in seconds.items()]


@settings(max_examples=150, deadline=None)
@given(
    intervals=INTERVALS,
    group_by=st.sampled_from(list(GroupBy)),
    period=st.sampled_from(list(Period)),
    window=st.tuples(st.integers(-5, 100), st.integers(1, 60)),
    now_day=st.integers(0, 150),
)
def test_ended_grants_summed_per_day_give_the_same_report_as_their_intervals(
    intervals: list[Interval],
    group_by: GroupBy,
    period: Period,
    window: tuple[int, int],
    now_day: int,
) -> None:
    start = T0 + timedelta(days=window[0])
    end = start + timedelta(days=window[1])
    now = T0 + timedelta(days=now_day, seconds=1234)
    runs = [  # to the second, as the ledger keeps them
        replace(r, end=r.end.replace(microsecond=0)) if r.end else r for r in intervals
    ]
    ended = [r for r in runs if r.end is not None and r.end <= now]
    running = [r for r in runs if r.end is None]
    by_interval = report(ended + running, CAPACITY, RATES, group_by, period, start, end, now)
    # The rollup's days: those that begin before the window's end as counted.
    usage = _summed(ended, group_by, period, start, max(start, min(end, now)))
    by_day = report(running, CAPACITY, RATES, group_by, period, start, end, now, usage=usage)
    assert [(r.period, r.kind, r.group) for r in by_day.rows] == [
        (r.period, r.kind, r.group) for r in by_interval.rows
    ]
    for one, other in zip(by_day.rows, by_interval.rows, strict=True):
        assert one.cost == pytest.approx(other.cost, abs=1e-6)
        assert one.gpu_hours == pytest.approx(other.gpu_hours, abs=1e-6)
