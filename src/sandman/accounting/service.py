"""The cost ledger's I/O: events written inside the grant's own transaction, capacity
snapshots, and the queries a usage report is computed from (``reports``, pure).

A report is a function of the ledger, the capacity snapshots, the rates and the
clock: re-running it gives the same numbers for periods that have ended, and a
running grant counts up to now. Prices come from the rates in force when the
report runs (changing a rate reprices the past; the ledger keeps what was held,
not what it cost).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import and_, exists, or_, select
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
    day_start,
    period_start,
    report,
)
from sandman.accounts.policy import Visibility
from sandman.domain import ACTIVE_STATUSES
from sandman.errors import SandmanError
from sandman.gpu.types import GpuDevice, GpuInventory
from sandman.store.database import Database
from sandman.store.models import LedgerCapacity, LedgerEvent, utcnow
from sandman.store.models import Session as SessionRow

log = logging.getLogger(__name__)

START = "start"
END = "end"
MAX_PERIODS = 1100  # three years of days
PERIOD_DAYS = {Period.DAY: 1, Period.WEEK: 7, Period.MONTH: 28}
ACTIVE = [s.value for s in ACTIVE_STATUSES]


def to_second(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)


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
        now = to_second(self.clock())
        first, following = default_window(now)
        begin = day_start(start or first)
        until = day_start(end or following)
        # An empty window (``to`` not after ``from``) is an empty report; a window of
        # more periods than MAX_PERIODS is counted from MAX_PERIODS periods before its
        # end (the answer's ``start`` says so).
        until = max(begin, until)
        earliest = min(until, now) - timedelta(days=MAX_PERIODS * PERIOD_DAYS[period])
        begin = max(begin, period_start(period, earliest))
        with self.db.read() as db:
            intervals = list(self._intervals(db, visibility, begin, until))
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
        )

    def _intervals(
        self, db: Db, visibility: Visibility, begin: datetime, until: datetime
    ) -> Iterator[Interval]:
        """Grants that overlap [begin, until): ended ones found through their end (the
        index on kind and time), running ones through the sessions still active."""
        start = aliased(LedgerEvent)
        end = aliased(LedgerEvent)
        columns = (
            start.session_id, start.at, start.user_id, start.team, start.project,
            start.gpu_name, start.mig_profile, start.gpu_share, start.gpus, start.priority,
        )  # fmt: skip
        ended = (
            select(*columns, end.at)
            .select_from(end)
            .join(start, and_(start.session_id == end.session_id, start.kind == START))
            .where(end.kind == END, end.at > begin, start.at < until)
        )
        no_end = ~exists().where(
            LedgerEvent.session_id == start.session_id, LedgerEvent.kind == END
        )
        # Driven by the few active sessions (an IN list, not a join the planner could
        # turn into a scan of every start).
        active = select(SessionRow.id).where(SessionRow.status.in_(ACTIVE))
        running = select(*columns, start.at).where(
            start.session_id.in_(active), start.kind == START, start.at < until, no_end
        )
        if not visibility.all:
            mine = [start.user_id == visibility.user_id]
            if visibility.teams:
                mine.append(start.team.in_(sorted(visibility.teams)))
            ended = ended.where(or_(*mine))
            running = running.where(or_(*mine))
        for query, closed in ((ended, True), (running, False)):
            for r in db.execute(query):
                yield Interval(
                    session_id=r[0],
                    start=r[1],
                    end=r[10] if closed else None,
                    user_id=r[2],
                    team=r[3],
                    project=r[4],
                    grant=Grant(r[5], r[6], r[7], r[8]),
                    priority=r[9],
                )
