"""Budgets' arithmetic: the spend of intervals, the forecast and when a budget runs
out, and which thresholds an alert is due for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandman.accounting.budgets import (
    Budget,
    BudgetAction,
    BudgetKind,
    Running,
    checked_budget,
    crossed,
    forecast,
    month_bounds,
    spend,
)
from sandman.accounting.rates import Grant, Rates
from sandman.accounting.reports import Interval
from sandman.errors import InvalidRequest

NOW = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)
RATES = Rates(per_gpu={"A100-40GB": 7.0}, currency="EUR", low_priority_discount=0.5)
WHOLE = Grant("NVIDIA A100-SXM4-40GB", None, None, 1)
SLICE = Grant("NVIDIA A100-SXM4-40GB", "1g.5gb", None, 1)


def interval(
    start: datetime, end: datetime | None, grant: Grant = WHOLE, priority: str = "normal"
) -> Interval:
    return Interval("s", start, end, "ann", "ml", None, grant, priority)


def test_spend_clips_to_the_window_and_applies_the_discount() -> None:
    first, _ = month_bounds(NOW)
    intervals = [
        interval(first - timedelta(hours=5), first + timedelta(hours=2)),  # 2 h in the month
        interval(NOW - timedelta(hours=1), None, SLICE),  # running: 1 h of a 1g (1/7)
        interval(NOW - timedelta(hours=2), NOW - timedelta(hours=1), priority="low"),
    ]
    assert spend(intervals, RATES, first, NOW) == pytest.approx(2 * 7 + 1 * 1 + 1 * 3.5)


def test_the_forecast_adds_what_runs_and_the_burn_and_finds_the_day_it_runs_out() -> None:
    _, month_end = month_bounds(NOW)
    running = [Running(7.0, NOW + timedelta(hours=10))]
    found = forecast(100.0, running, trailing_spend=168.0, now=NOW, amount=500.0)
    left = (month_end - NOW).total_seconds() / 3600
    assert found.committed == pytest.approx(70.0)
    assert found.burn_per_hour == pytest.approx(1.0)
    assert found.projected == pytest.approx(100 + 70 + left)
    assert found.hourly_now == 7.0
    # 100 spent, 7/h for 10 h and 1/h throughout: 500 is reached 330 h from now
    assert found.runs_out_at is not None
    hours = (found.runs_out_at - NOW).total_seconds() / 3600
    assert 100 + 70 + hours == pytest.approx(500, abs=1 / 60 + 1e-6)


def test_a_spent_budget_ran_out_now_and_a_distant_one_never() -> None:
    assert forecast(10.0, [], 0.0, NOW, amount=5.0).runs_out_at == NOW
    assert forecast(10.0, [], 0.0, NOW, amount=50.0).runs_out_at is None


@given(spent=st.floats(0, 1e6), amount=st.floats(0.01, 1e6))
def test_with_nothing_running_and_nothing_burnt_the_forecast_is_the_spend(
    spent: float, amount: float
) -> None:
    found = forecast(spent, [], 0.0, NOW, amount)
    assert found.projected == spent and found.committed == 0.0
    assert (found.runs_out_at == NOW) == (spent >= amount)


@given(
    spent=st.floats(0, 1000),
    hourly=st.lists(st.tuples(st.floats(0, 50), st.integers(1, 2000)), max_size=5),
    burnt=st.floats(0, 5000),
    amount=st.floats(1, 5000),
)
def test_the_run_out_time_is_within_the_month_and_the_projection_reaches_it(
    spent: float, hourly: list[tuple[float, int]], burnt: float, amount: float
) -> None:
    running = [Running(h, NOW + timedelta(hours=n)) for h, n in hourly]
    found = forecast(spent, running, burnt, NOW, amount)
    assert found.projected >= spent
    if found.runs_out_at is not None:
        assert NOW <= found.runs_out_at <= found.month_end
        assert found.projected + 1e-6 >= amount or spent >= amount
    else:
        assert found.projected < amount


def test_thresholds_are_due_once_each() -> None:
    budget = Budget(BudgetKind.TEAM, "ml", 100.0)
    assert crossed(budget, 49.0, []) == []
    assert crossed(budget, 85.0, []) == [50, 80]
    assert crossed(budget, 85.0, [50]) == [80]
    assert crossed(budget, 100.0, [50, 80]) == [100]


def test_a_budget_from_a_caller_is_checked() -> None:
    made = checked_budget(BudgetKind.PROJECT, "p", 10, [100, 50, 50], "block-new")
    assert made.thresholds == (50, 100) and made.action == BudgetAction.BLOCK_NEW
    assert made.blocks_new
    for amount, thresholds, action in [
        (0, None, None),
        (True, None, None),
        (10, [], None),
        (10, [0], None),
        (10, None, "explode"),
    ]:
        with pytest.raises(InvalidRequest):
            checked_budget(BudgetKind.TEAM, "t", amount, thresholds, action)
