"""The cost ledger's I/O: events written inside the grant's own transaction, capacity
snapshots, and the queries a usage report is computed from (``reports``, pure).

A report is a function of the ledger, the capacity snapshots, the rates and the
clock: re-running it gives the same numbers for periods that have ended, and a
running grant counts up to now. Prices come from the rates in force when the
report runs (changing a rate reprices the past; the ledger keeps what was held,
not what it cost).

Ended grants are read from the day rollup (``ledger_days``: seconds per UTC day and
per grant key, added to in the transaction that writes the end), summed per period
and group in SQL; running grants (a start, no end yet) are read as intervals. The
end event and the rollup are written together, so a grant is counted in exactly
one of the two. ``intervals`` reads every grant as an interval: budgets use it for
a month, and the tests check the rollup against it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as Db
from sqlalchemy.orm import aliased

from sandman.accounting.rates import Grant, Rates, model_key
from sandman.accounting.reports import (
    Capacity,
    GroupBy,
    Interval,
    Period,
    Report,
    Usage,
    day_seconds,
    day_start,
    period_start,
    report,
)
from sandman.accounts.policy import Visibility
from sandman.domain import ACTIVE_STATUSES
from sandman.errors import SandmanError
from sandman.gpu.types import GpuDevice, GpuInventory
from sandman.store.database import Database
from sandman.store.models import LedgerCapacity, LedgerDay, LedgerEvent, utcnow
from sandman.store.models import Session as SessionRow

log = logging.getLogger(__name__)

START = "start"
END = "end"
MAX_PERIODS = 1100  # three years of days
PERIOD_DAYS = {Period.DAY: 1, Period.WEEK: 7, Period.MONTH: 28}
ACTIVE = [s.value for s in ACTIVE_STATUSES]


def to_second(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)


GRANT_COLUMNS = (
    "user_id", "team", "project", "gpu_name", "mig_profile", "gpu_share", "gpus", "priority",
)  # fmt: skip


def grant_key(grant: Mapping[str, Any]) -> str:
    """The rollup's key: a digest of whose grant it was, what it held, at which priority."""
    text = json.dumps([grant[name] for name in GRANT_COLUMNS], separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def day_rows(ended: Iterable[tuple[Mapping[str, Any], datetime, datetime]]) -> list[dict[str, Any]]:
    """``ledger_days`` rows for ended grants ((grant columns, start, end)), summed per day
    and key: what the release hook adds one grant at a time."""
    rows: dict[tuple[date, str], dict[str, Any]] = {}
    for grant, start, end in ended:
        key = grant_key(grant)
        for day, seconds in day_seconds(start, end):
            row = rows.get((day, key))
            if row is None:
                rows[(day, key)] = _day_row(grant, key, day, seconds)
            else:
                row["seconds"] += seconds
    return list(rows.values())


def _day_row(grant: Mapping[str, Any], key: str, day: date, seconds: int) -> dict[str, Any]:
    return {
        "day": day,
        "key": key,
        "week": day - timedelta(days=day.weekday()),
        "month": day.replace(day=1),
        **{name: grant[name] for name in GRANT_COLUMNS},
        "seconds": seconds,
    }


def default_window(now: datetime) -> tuple[date, date]:
    """This calendar month (UTC)."""
    first = now.astimezone(UTC).date().replace(day=1)
    return first, (first + timedelta(days=32)).replace(day=1)


class UsageLedger:
    def __init__(
        self,
        db: Database,
        rates: Rates,
        inventory: GpuInventory | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.rates = rates
        self.inventory = inventory  # whose GPUs are the capacity
        self.clock = clock

    # ------------------------------------------------------------------ hooks
    def on_grant(self, db: Db, row: SessionRow, at: datetime) -> None:
        """``SessionService.grant_hooks``: the grant's start, in its own transaction."""
        held = row.gpu_parent_uuid or row.gpu_uuid
        if not held or self._event(db, row.id, START) is not None:
            return
        db.add(
            LedgerEvent(
                session_id=row.id,
                kind=START,
                at=to_second(at),
                user_id=row.user_id,
                team=row.team,
                project=row.project,
                gpu_name=row.gpu_name,
                mig_profile=row.mig_profile,
                gpu_share=row.gpu_share,
                gpus=len(held.split(",")),
                priority=row.priority or "normal",
            )
        )

    def on_release(self, db: Db, row: SessionRow, at: datetime) -> None:
        """``SessionService.release_hooks``: the grant's end (once; only if it started)."""
        start = self._event(db, row.id, START)
        if start is None or self._event(db, row.id, END) is not None:
            return
        db.add(
            LedgerEvent(
                session_id=row.id,
                kind=END,
                at=max(start.at, to_second(at)),
                user_id=start.user_id,
                team=start.team,
                project=start.project,
                gpu_name=start.gpu_name,
                mig_profile=start.mig_profile,
                gpu_share=start.gpu_share,
                gpus=start.gpus,
                priority=start.priority,
            )
        )
        grant = {name: getattr(start, name) for name in GRANT_COLUMNS}
        for day, seconds in day_seconds(start.at, max(start.at, to_second(at))):
            self._add_day(db, _day_row(grant, grant_key(grant), day, seconds))

    @staticmethod
    def _add_day(db: Db, row: dict[str, Any]) -> None:
        """Adds a day's seconds to its rollup row: one upsert where the database has
        one (no race between two releases of the same key), else update-or-insert."""
        dialect = db.get_bind().dialect.name
        if dialect in ("sqlite", "postgresql"):
            insert = (sqlite if dialect == "sqlite" else postgresql).insert(LedgerDay)
            db.execute(
                insert.values(row).on_conflict_do_update(
                    index_elements=[LedgerDay.day, LedgerDay.key],
                    set_={"seconds": LedgerDay.seconds + insert.excluded.seconds},
                )
            )
            return
        added = db.execute(
            update(LedgerDay)
            .where(LedgerDay.day == row["day"], LedgerDay.key == row["key"])
            .values(seconds=LedgerDay.seconds + row["seconds"])
        )
        if not added.rowcount:  # type: ignore[attr-defined]
            db.add(LedgerDay(**row))

    @staticmethod
    def _event(db: Db, session_id: str, kind: str) -> LedgerEvent | None:
        return db.scalars(
            select(LedgerEvent).where(
                LedgerEvent.session_id == session_id, LedgerEvent.kind == kind
            )
        ).first()

    # --------------------------------------------------------------- capacity
    def record_capacity(self, devices: Sequence[GpuDevice] | None = None) -> bool:
        """A snapshot of the GPUs per model (``devices``, else the inventory's) when it
        differs from the last one. The capacity is what the inventory has when this runs
        (start-up, then hourly): a GPU added in between counts from the next check."""
        if devices is None:
            if self.inventory is None:
                return False
            try:
                devices = self.inventory.devices()
            except SandmanError as exc:
                log.error("cannot read the GPUs for the cost capacity: %s", exc.message)
                return False
        gpus = dict(Counter(model_key(d.model or d.name) for d in devices))
        try:
            with self.db.transaction() as db:
                last = db.scalars(
                    select(LedgerCapacity).order_by(LedgerCapacity.at.desc()).limit(1)
                ).first()
                if last is not None and last.gpus == gpus:
                    return False
                db.add(LedgerCapacity(at=self.clock(), gpus=gpus))
        except IntegrityError:
            return False  # another process wrote one at the same moment
        log.info("GPU capacity for costs: %s", gpus or "no GPUs")
        return True

    def capacity(self) -> list[Capacity]:
        with self.db.read() as db:
            rows = db.scalars(select(LedgerCapacity).order_by(LedgerCapacity.at))
            return [Capacity(r.at, dict(r.gpus)) for r in rows]

    # ----------------------------------------------------------------- report
    def report(
        self,
        visibility: Visibility,
        group_by: GroupBy,
        period: Period,
        start: date | None = None,
        end: date | None = None,
    ) -> Report:
        """Usage in [start, end) (UTC dates; this month by default) as ``visibility``
        allows: everything with idle and capacity, or one's own and one's led teams'."""
        now, begin, until = self._window(period, start, end)
        counted = max(begin, min(until, now))  # the rollup's days: those before this
        with self.db.read() as db:
            ended = self._ended_days(db, visibility, group_by, period, begin, counted)
            running = list(self._intervals(db, visibility, begin, until, ended=False))
        return self._report(visibility, group_by, period, begin, until, now, running, ended)

    def report_from_intervals(
        self,
        visibility: Visibility,
        group_by: GroupBy,
        period: Period,
        start: date | None = None,
        end: date | None = None,
    ) -> Report:
        """``report`` from every grant read and priced as an interval, without the
        rollup: the reference the rollup is tested and benchmarked against."""
        now, begin, until = self._window(period, start, end)
        with self.db.read() as db:
            intervals = list(self.intervals(db, visibility, begin, until))
        return self._report(visibility, group_by, period, begin, until, now, intervals, [])

    def _window(
        self, period: Period, start: date | None, end: date | None
    ) -> tuple[datetime, datetime, datetime]:
        """(now, the window's start, its end), the window from day boundaries."""
        now = to_second(self.clock())
        first, following = default_window(now)
        begin = day_start(start or first)
        until = day_start(end or following)
        # An empty window (``to`` not after ``from``) is an empty report; a window of
        # more periods than MAX_PERIODS is counted from MAX_PERIODS periods before its
        # end (the answer's ``start`` says so).
        until = max(begin, until)
        earliest = min(until, now) - timedelta(days=MAX_PERIODS * PERIOD_DAYS[period])
        return now, max(begin, period_start(period, earliest)), until

    def _report(
        self,
        visibility: Visibility,
        group_by: GroupBy,
        period: Period,
        begin: datetime,
        until: datetime,
        now: datetime,
        intervals: list[Interval],
        ended: list[Usage],
    ) -> Report:
        return report(
            intervals,
            self.capacity() if visibility.all else [],
            self.rates,
            group_by,
            period,
            begin,
            until,
            now,
            full=visibility.all,
            usage=ended,
        )

    def _ended_days(
        self,
        db: Db,
        visibility: Visibility,
        group_by: GroupBy,
        period: Period,
        begin: datetime,
        until: datetime,
    ) -> list[Usage]:
        """Ended grants' seconds in the days of [begin, until), summed in SQL per period,
        group and grant (``until`` past midnight takes its whole day: what has ended
        by now)."""
        days = LedgerDay
        label = {Period.DAY: days.day, Period.WEEK: days.week, Period.MONTH: days.month}[period]
        group: Any = {
            GroupBy.USER: days.user_id,
            GroupBy.TEAM: days.team,
            GroupBy.PROJECT: days.project,
            GroupBy.MODEL: days.gpu_name,  # a model's names are joined in Python
        }[group_by]
        keys = (label, group, days.gpu_name, days.mig_profile, days.gpu_share, days.gpus,
                days.priority)  # fmt: skip
        last = (until - timedelta(microseconds=1)).date()
        query = (
            select(*keys, func.sum(days.seconds))
            .where(days.day >= begin.date(), days.day <= last)
            .group_by(*keys)
        )
        if not visibility.all:
            query = query.where(self._visible(visibility, days.user_id, days.team))
        grants: dict[tuple[Any, ...], Grant] = {}  # one object per grant: priced once
        usage: list[Usage] = []
        for period_day, name, gpu_name, profile, share, gpus, priority, seconds in db.execute(
            query
        ):
            grant = grants.get((gpu_name, profile, share, gpus))
            if grant is None:
                grant = grants[(gpu_name, profile, share, gpus)] = Grant(
                    gpu_name, profile, share, gpus
                )
            if group_by is GroupBy.MODEL:
                name = model_key(gpu_name)
            usage.append(Usage(period_day, name, grant, priority, seconds))
        return usage

    @staticmethod
    def _visible(visibility: Visibility, user_id: Any, team: Any) -> ColumnElement[bool]:
        mine = [user_id == visibility.user_id]
        if visibility.teams:
            mine.append(team.in_(sorted(visibility.teams)))
        return or_(*mine)

    def intervals(
        self, db: Db, visibility: Visibility, begin: datetime, until: datetime
    ) -> Iterator[Interval]:
        """Every grant that overlaps [begin, until), ended and running, as an interval."""
        yield from self._intervals(db, visibility, begin, until, ended=True)
        yield from self._intervals(db, visibility, begin, until, ended=False)

    def _intervals(
        self, db: Db, visibility: Visibility, begin: datetime, until: datetime, ended: bool
    ) -> Iterator[Interval]:
        """Grants that overlap [begin, until): ended ones found through their end (the
        index on kind and time), running ones through the sessions still active."""
        start = aliased(LedgerEvent)
        end = aliased(LedgerEvent)
        columns = (
            start.session_id, start.at, start.user_id, start.team, start.project,
            start.gpu_name, start.mig_profile, start.gpu_share, start.gpus, start.priority,
        )  # fmt: skip
        query: Select[*tuple[Any, ...]]
        if ended:
            query = (
                select(*columns, end.at)
                .select_from(end)
                .join(start, and_(start.session_id == end.session_id, start.kind == START))
                .where(end.kind == END, end.at > begin, start.at < until)
            )
        else:
            no_end = ~exists().where(
                LedgerEvent.session_id == start.session_id, LedgerEvent.kind == END
            )
            # Driven by the few active sessions: their ids first, then their starts
            # through the unique index (a subquery lets the planner scan every start).
            active = list(db.scalars(select(SessionRow.id).where(SessionRow.status.in_(ACTIVE))))
            if not active:
                return
            query = select(*columns, start.at).where(
                start.session_id.in_(active), start.kind == START, start.at < until, no_end
            )
        if not visibility.all:
            query = query.where(self._visible(visibility, start.user_id, start.team))
        for r in db.execute(query):
            yield Interval(
                session_id=r[0],
                start=r[1],
                end=r[10] if ended else None,
                user_id=r[2],
                team=r[3],
                project=r[4],
                grant=Grant(r[5], r[6], r[7], r[8]),
                priority=r[9],
            )
