"""Budgets kept in the database, checked at admission, and swept on a timer.

The arithmetic (spend, forecast, thresholds) is in ``accounting.budgets``; this
service reads the ledger's intervals and the running sessions, writes budgets and
the alerts sent, refuses new sessions under a spent ``block-new`` or ``end``
budget, and ends the sessions of a spent ``end`` budget after the grace.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as Db

from sandman.accounting.budgets import (
    TRAILING,
    Budget,
    BudgetAction,
    BudgetKind,
    Forecast,
    Running,
    charged_hourly,
    crossed,
    forecast,
    month_bounds,
    ratio,
    spend,
)
from sandman.accounting.rates import Grant, Rates
from sandman.accounting.reports import Interval
from sandman.accounting.service import UsageLedger
from sandman.accounts.policy import Visibility
from sandman.domain import ACTIVE_STATUSES, validate_name
from sandman.errors import BudgetExhausted, NotFound
from sandman.store.database import Database
from sandman.store.models import BudgetAlert, BudgetRow, utcnow
from sandman.store.models import Session as SessionRow
from sandman.store.transitions import acquire_lease

log = logging.getLogger(__name__)

ACTIVE = [s.value for s in ACTIVE_STATUSES]
LEASE = "budget-sweep"
EVERYONE = Visibility(all=True)


@dataclass(frozen=True)
class BudgetStatus:
    budget: Budget
    month: str
    spent: float
    ratio: float
    forecast: Forecast
    currency: str
    updated_at: datetime
    end_at: datetime | None = None  # action "end": when its sessions end

    def as_dict(self) -> dict[str, Any]:
        f = self.forecast
        return {
            "kind": self.budget.kind.value,
            "name": self.budget.name,
            "amount": self.budget.amount,
            "thresholds": list(self.budget.thresholds),
            "action": self.budget.action.value,
            "currency": self.currency,
            "month": self.month,
            "spent": round(self.spent, 4),
            "used_ratio": round(self.ratio, 4),
            "forecast": {
                "projected": round(f.projected, 4),
                "committed": round(f.committed, 4),
                "burn_per_hour": round(f.burn_per_hour, 4),
                "hourly_now": round(f.hourly_now, 4),
                "runs_out_at": f.runs_out_at,
                "month_end": f.month_end,
            },
            "sessions_end_at": self.end_at,
            "updated_at": self.updated_at,
        }


def session_grant(row: SessionRow) -> Grant:
    held = row.gpu_parent_uuid or row.gpu_uuid or ""
    return Grant(row.gpu_name, row.mig_profile, row.gpu_share, len(held.split(",")) if held else 0)


def _budget(row: BudgetRow) -> Budget:
    return Budget(
        BudgetKind(row.kind), row.name, row.amount, tuple(row.thresholds), BudgetAction(row.action)
    )


class Budgets:
    def __init__(
        self,
        db: Database,
        ledger: UsageLedger,
        rates: Rates,
        grace: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.ledger = ledger
        self.rates = rates
        self.grace = grace
        self.clock = clock
        self.worker_id = "budgets"
        # Set by the core: (kind, name, subject, text) to the team's leads;
        # (user, session, subject, text) to a session's user; and how to end one.
        self.tell_leads: Callable[[BudgetKind, str, str, str], object] | None = None
        self.tell_user: Callable[[str, str, str, str], object] | None = None
        self.end_session: Callable[[str, str], object] | None = None
        # As of the last sweep, for /metrics.
        self.used_ratio: dict[tuple[str, str], float] = {}
        self.hourly_cost: dict[tuple[str, str], float] = {}

    # -------------------------------------------------------------------- storage
    def put(self, budget: Budget) -> BudgetStatus:
        validate_name(budget.name, budget.kind.value)
        with self.db.transaction() as db:
            row = db.get(BudgetRow, (budget.kind.value, budget.name))
            if row is None:
                row = BudgetRow(kind=budget.kind.value, name=budget.name)
                db.add(row)
            row.amount = budget.amount
            row.thresholds = list(budget.thresholds)
            row.action = budget.action.value
            row.updated_at = self.clock()
        return self.status(budget.kind, budget.name)

    def delete(self, kind: BudgetKind, name: str) -> None:
        with self.db.transaction() as db:
            row = db.get(BudgetRow, (kind.value, name))
            if row is None:
                raise NotFound(f"no budget for {kind.value} {name}")
            db.delete(row)

    def status(self, kind: BudgetKind, name: str) -> BudgetStatus:
        found = self.statuses([(kind, name)])
        if not found:
            raise NotFound(f"no budget for {kind.value} {name}")
        return found[0]

    def statuses(self, keys: Iterable[tuple[BudgetKind, str]] | None = None) -> list[BudgetStatus]:
        """Every budget (or those of ``keys``) with this month's spend and forecast."""
        wanted = None if keys is None else {(k.value, n) for k, n in keys}
        now = self.clock()
        with self.db.read() as db:
            rows = [
                r
                for r in db.scalars(select(BudgetRow).order_by(BudgetRow.kind, BudgetRow.name))
                if wanted is None or (r.kind, r.name) in wanted
            ]
            if not rows:
                return []
            facts = _Facts.read(self, db, now)
            ends = {
                (a.kind, a.name): a.end_at
                for a in db.scalars(
                    select(BudgetAlert).where(
                        BudgetAlert.month == _month(now), BudgetAlert.end_at.is_not(None)
                    )
                )
            }
        out = []
        for row in rows:
            budget = _budget(row)
            spent = facts.spent(budget.kind, budget.name)
            out.append(
                BudgetStatus(
                    budget,
                    _month(now),
                    spent,
                    ratio(spent, budget.amount),
                    facts.forecast(budget.kind, budget.name, budget.amount),
                    self.rates.currency,
                    row.updated_at,
                    ends.get((row.kind, row.name)),
                )
            )
        return out

    def forecasts(self, kind: BudgetKind) -> list[dict[str, Any]]:
        """This month's forecast of every team (or project) that spent or runs anything."""
        now = self.clock()
        with self.db.read() as db:
            facts = _Facts.read(self, db, now)
        names = sorted(facts.names(kind))
        return [
            {
                "kind": kind.value,
                "name": name,
                "currency": self.rates.currency,
                "month": _month(now),
                "spent": round(facts.spent(kind, name), 4),
                **{
                    k: (round(v, 4) if isinstance(v, float) else v)
                    for k, v in _forecast_fields(facts.forecast(kind, name, None)).items()
                },
            }
            for name in names
        ]

    # ------------------------------------------------------------------ admission
    def admit(self, db: Db, team: str | None, project: str | None) -> None:
        """Refuse (403 ``budget_exhausted``) a new session charged to a spent budget
        whose action blocks new ones. Only budgets that block are read, so a site
        without such budgets pays one small query."""
        keys = [(BudgetKind.TEAM, team), (BudgetKind.PROJECT, project)]
        rows = [
            row
            for kind, name in keys
            if name is not None
            and (row := db.get(BudgetRow, (kind.value, name))) is not None
            and BudgetAction(row.action) != BudgetAction.WARN
        ]
        if not rows:
            return
        now = self.clock()
        facts = _Facts.read(self, db, now, trailing=False)
        for row in rows:
            spent = facts.spent(BudgetKind(row.kind), row.name)
            if spent + 1e-9 >= row.amount:
                raise BudgetExhausted(
                    f"the {row.kind} {row.name}'s budget for {_month(now)} is spent: "
                    f"{spent:.2f} of {row.amount:.2f} {self.rates.currency} "
                    f"(action {row.action}); new sessions charged to it are refused until "
                    "next month or until an operator raises the budget"
                )

    # ---------------------------------------------------------------------- sweep
    def sweep(self) -> None:
        """Alert crossed thresholds, end the sessions of spent ``end`` budgets after the
        grace, and refresh the figures ``/metrics`` shows. One process at a time."""
        now = self.clock()
        with self.db.transaction() as db:
            if not acquire_lease(db, LEASE, self.worker_id, now, timedelta(minutes=5)):
                self._refresh_metrics(now)
                return
        statuses = self.statuses()
        self._refresh_metrics(now, statuses)
        for status in statuses:
            self._alert(status, now)
        self._end_due(now)

    def _refresh_metrics(self, now: datetime, statuses: list[BudgetStatus] | None = None) -> None:
        if statuses is None:
            statuses = self.statuses()
        self.used_ratio = {(s.budget.kind.value, s.budget.name): s.ratio for s in statuses}
        with self.db.read() as db:
            hourly: dict[tuple[str, str], float] = {}
            for row in db.scalars(select(SessionRow).where(SessionRow.status.in_(ACTIVE))):
                grant = session_grant(row)
                if grant.gpus:
                    key = (row.team or "", row.project or "")
                    hourly[key] = hourly.get(key, 0.0) + charged_hourly(
                        self.rates, grant, row.priority
                    )
        self.hourly_cost = hourly

    def _alert(self, status: BudgetStatus, now: datetime) -> None:
        budget, month = status.budget, status.month
        with self.db.transaction() as db:
            sent = [
                a.threshold
                for a in db.scalars(
                    select(BudgetAlert).where(
                        BudgetAlert.kind == budget.kind.value,
                        BudgetAlert.name == budget.name,
                        BudgetAlert.month == month,
                    )
                )
            ]
            new = crossed(budget, status.spent, sent)
            ending = None
            for threshold in new:
                end_at = None
                if budget.action == BudgetAction.END and threshold >= 100 and ending is None:
                    end_at = ending = now + timedelta(seconds=self.grace)
                db.add(
                    BudgetAlert(
                        kind=budget.kind.value,
                        name=budget.name,
                        month=month,
                        threshold=threshold,
                        at=now,
                        end_at=end_at,
                    )
                )
        if not new:
            return
        top = max(new)
        text = (
            f"The {budget.kind.value} {budget.name} has spent {status.spent:.2f} of its "
            f"{budget.amount:.2f} {status.currency} budget for {month} ({status.ratio:.0%}, "
            f"threshold {top}%); the forecast for the month is "
            f"{status.forecast.projected:.2f} {status.currency}."
        )
        if top >= 100 and budget.blocks_new:
            text += " New sessions charged to it are refused."
        if ending is not None:
            text += f" Its running sessions end at {ending:%H:%M} UTC."
            self._warn_sessions(budget, ending)
        log.warning("budget alert: %s", text)
        if self.tell_leads is not None:
            self.tell_leads(budget.kind, budget.name, f"Budget {top}%: {budget.name}", text)

    def _sessions_of(self, db: Db, kind: str, name: str) -> list[SessionRow]:
        column = SessionRow.team if kind == BudgetKind.TEAM else SessionRow.project
        return list(
            db.scalars(select(SessionRow).where(SessionRow.status.in_(ACTIVE), column == name))
        )

    def _warn_sessions(self, budget: Budget, at: datetime) -> None:
        with self.db.read() as db:
            rows = self._sessions_of(db, budget.kind.value, budget.name)
        for row in rows:
            if self.tell_user is not None:
                self.tell_user(
                    row.user_id,
                    row.id,
                    "Your session will end: budget spent",
                    f"the {budget.kind.value} {budget.name}'s budget is spent; session {row.id} "
                    f"ends at {at:%H:%M} UTC. Save your work now; your /workspace stays.",
                )

    def _end_due(self, now: datetime) -> None:
        with self.db.read() as db:
            due = list(
                db.scalars(
                    select(BudgetAlert).where(
                        BudgetAlert.end_at.is_not(None),
                        BudgetAlert.end_at <= now,
                        BudgetAlert.ended.is_(False),
                    )
                )
            )
        for alert in due:
            with self.db.read() as db:
                rows = self._sessions_of(db, alert.kind, alert.name)
            reason = (
                f"the {alert.kind} {alert.name}'s budget for {alert.month} is spent (action end)"
            )
            for row in rows:
                if self.end_session is not None:
                    self.end_session(row.id, reason)
            with self.db.transaction() as db:
                found = db.get(BudgetAlert, (alert.kind, alert.name, alert.month, alert.threshold))
                if found is not None:
                    found.ended = True


def _month(now: datetime) -> str:
    return f"{now.year:04d}-{now.month:02d}"


def _forecast_fields(f: Forecast) -> dict[str, Any]:
    return {
        "projected": f.projected,
        "committed": f.committed,
        "burn_per_hour": f.burn_per_hour,
        "hourly_now": f.hourly_now,
        "runs_out_at": f.runs_out_at,
        "month_end": f.month_end,
    }


@dataclass
class _Facts:
    """What budgets are computed from: this month's and the trailing window's
    intervals, and the running sessions, read once."""

    service: Budgets
    now: datetime
    month: list[Interval]
    trailing: list[Interval]
    running: list[SessionRow]

    @classmethod
    def read(cls, service: Budgets, db: Db, now: datetime, trailing: bool = True) -> _Facts:
        first, _ = month_bounds(now)
        begin = min(first, now - TRAILING) if trailing else first
        intervals = list(service.ledger.intervals(db, EVERYONE, begin, now + timedelta(seconds=1)))
        running = list(db.scalars(select(SessionRow).where(SessionRow.status.in_(ACTIVE))))
        return cls(service, now, intervals, intervals if trailing else [], running)

    @staticmethod
    def _of(kind: BudgetKind, name: str, team: str | None, project: str | None) -> bool:
        return (team if kind == BudgetKind.TEAM else project) == name

    def names(self, kind: BudgetKind) -> set[str]:
        first, _ = month_bounds(self.now)
        found = {
            (i.team if kind == BudgetKind.TEAM else i.project)
            for i in self.month
            if (i.end or self.now) > first
        }
        found |= {(r.team if kind == BudgetKind.TEAM else r.project) for r in self.running}
        return {n for n in found if n}

    def spent(self, kind: BudgetKind, name: str) -> float:
        first, _ = month_bounds(self.now)
        mine = [i for i in self.month if self._of(kind, name, i.team, i.project)]
        return spend(mine, self.service.rates, first, self.now)

    def forecast(self, kind: BudgetKind, name: str, amount: float | None) -> Forecast:
        rates = self.service.rates
        running = [
            Running(charged_hourly(rates, session_grant(r), r.priority), r.expires_at)
            for r in self.running
            if self._of(kind, name, r.team, r.project) and session_grant(r).gpus
        ]
        trailing = [i for i in self.trailing if self._of(kind, name, i.team, i.project)]
        burned = spend(trailing, rates, self.now - TRAILING, self.now)
        return forecast(self.spent(kind, name), running, burned, self.now, amount)
