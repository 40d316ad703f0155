"""Budgets per team and project per calendar month, and forecasts: pure arithmetic.

A budget has an ``amount`` (in the rates' currency), ``thresholds`` in percent
(default 50, 80, 100) whose crossing alerts the team's leads once a month, and an
``action`` at 100%: ``warn`` (only the alert), ``block-new`` (new sessions charged
to it are refused, ``budget_exhausted``) or ``end`` (new ones refused, and the
running ones warned and ended after the grace).

The forecast of a month is, as the issue asks:

    spend to date
    + what the running sessions will cost until their ``expires_at`` (committed)
    + the trailing burn rate (the last 7 days' spend per hour) x the hours left

It is deliberately an upper estimate: sessions that run now are in the burn rate
as well as in what they commit. With nothing running and nothing spent in the
trailing window it equals the spend. The budget runs out at the first moment the
same sum, taken up to that moment, reaches the amount.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sandman.accounting.rates import Grant, Rates, hourly_price
from sandman.accounting.reports import Interval
from sandman.errors import InvalidRequest

DEFAULT_THRESHOLDS = (50, 80, 100)
TRAILING = timedelta(days=7)
HOUR = 3600.0


class BudgetKind(StrEnum):
    TEAM = "team"
    PROJECT = "project"


class BudgetAction(StrEnum):
    WARN = "warn"
    BLOCK_NEW = "block-new"
    END = "end"


@dataclass(frozen=True)
class Budget:
    kind: BudgetKind
    name: str
    amount: float
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS
    action: BudgetAction = BudgetAction.WARN

    @property
    def blocks_new(self) -> bool:
        return self.action in (BudgetAction.BLOCK_NEW, BudgetAction.END)


def checked_budget(
    kind: BudgetKind, name: str, amount: object, thresholds: object, action: object
) -> Budget:
    """A budget from what a caller sent, or ``InvalidRequest`` saying what is wrong."""
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not amount > 0:
        raise InvalidRequest(f"amount must be a number above 0, not {amount!r}")
    if amount > 1e12:
        raise InvalidRequest("amount must be at most 1e12")
    given = DEFAULT_THRESHOLDS if thresholds is None else thresholds
    if not isinstance(given, list | tuple) or not given:
        raise InvalidRequest("thresholds must be a non-empty list of percentages")
    if any(isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= 1000 for t in given):
        raise InvalidRequest("thresholds must be whole percentages from 1 to 1000")
    try:
        chosen = BudgetAction(str(action) if action is not None else BudgetAction.WARN)
    except ValueError:
        raise InvalidRequest(
            f"action must be one of {', '.join(a.value for a in BudgetAction)}, not {action!r}"
        ) from None
    return Budget(kind, name, float(amount), tuple(sorted(set(given))), chosen)


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) ``now`` is in: [first day, first day of the next)."""
    first = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (first + timedelta(days=32)).replace(day=1)
    return first, following


def charged_hourly(rates: Rates, grant: Grant, priority: str | None) -> float:
    """What the grant costs per hour after its discount."""
    return hourly_price(rates, grant) * (1.0 - rates.discount(priority))


def spend(intervals: Iterable[Interval], rates: Rates, start: datetime, end: datetime) -> float:
    """What ``intervals`` cost (after discounts) within [start, end); a running one
    counts up to ``end``."""
    total = 0.0
    for interval in intervals:
        begin = max(interval.start, start)
        until = min(interval.end or end, end)
        if until > begin:
            hours = (until - begin).total_seconds() / HOUR
            total += hours * charged_hourly(rates, interval.grant, interval.priority)
    return total


@dataclass(frozen=True)
class Running:
    """A running session as a forecast sees it: what it costs per hour, until when."""

    hourly: float
    expires_at: datetime


@dataclass(frozen=True)
class Forecast:
    spent: float
    committed: float  # the running sessions until their expiry (within the month)
    burn_per_hour: float  # the trailing window's spend per hour
    projected: float  # spent + committed + burn x the hours left
    runs_out_at: datetime | None  # when the projection reaches the budget (None: not
    # this month, or no budget)
    month_end: datetime
    hourly_now: float = 0.0  # what the running sessions cost per hour now
    notes: tuple[str, ...] = field(default=())


def forecast(
    spent: float,
    running: Sequence[Running],
    trailing_spend: float,
    now: datetime,
    amount: float | None = None,
    trailing: timedelta = TRAILING,
) -> Forecast:
    """The month's projection from its spend, the running sessions and the trailing burn."""
    _, month_end = month_bounds(now)
    left_hours = max((month_end - now).total_seconds(), 0.0) / HOUR
    burn = trailing_spend / (trailing.total_seconds() / HOUR)

    def committed_until(moment: datetime) -> float:
        total = 0.0
        for session in running:
            until = min(session.expires_at, moment)
            if until > now:
                total += session.hourly * (until - now).total_seconds() / HOUR
        return total

    committed = committed_until(month_end)
    projected = spent + committed + burn * left_hours
    runs_out = None
    if amount is not None:
        if spent >= amount:
            runs_out = now
        elif projected >= amount:
            runs_out = _first_reaching(spent, amount, burn, now, month_end, committed_until)
    hourly_now = sum(s.hourly for s in running if s.expires_at > now)
    return Forecast(spent, committed, burn, projected, runs_out, month_end, hourly_now)


def _first_reaching(
    spent: float,
    amount: float,
    burn: float,
    now: datetime,
    month_end: datetime,
    committed_until: Callable[[datetime], float],
) -> datetime:
    """The first minute at which spend + committed + burn reaches ``amount`` (a
    bisection: the sum only grows with time)."""
    low, high = now, month_end
    while (high - low) > timedelta(minutes=1):
        middle = low + (high - low) / 2
        hours = (middle - now).total_seconds() / HOUR
        if spent + committed_until(middle) + burn * hours >= amount:
            high = middle
        else:
            low = middle
    return high.replace(second=0, microsecond=0)


def ratio(spent: float, amount: float) -> float:
    return spent / amount if amount > 0 else 0.0


def crossed(budget: Budget, spent: float, already: Iterable[int]) -> list[int]:
    """The thresholds reached and not yet alerted this month, lowest first."""
    done = set(already)
    percent = ratio(spent, budget.amount) * 100
    return [t for t in budget.thresholds if percent + 1e-9 >= t and t not in done]
