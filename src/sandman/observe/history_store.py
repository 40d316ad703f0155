"""The metrics history in the database: one-minute rows written as minutes close,
pruned past the retention, and read for the session and GPU pages.

It listens to the collector (``record`` after each pass, on the collector's
thread), so the API's requests never write it; a read is one indexed range
query on (kind, key, minute).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from sandman.observe.history import MinuteAverages, Point
from sandman.observe.samples import MetricsSnapshot
from sandman.store.database import Database
from sandman.store.models import MetricPoint, utcnow

__all__ = ["MAX_POINTS", "MetricHistory"]

log = logging.getLogger(__name__)

MAX_POINTS = 10_080  # one week of minutes in one answer


class MetricHistory:
    def __init__(
        self,
        db: Database,
        retention: timedelta,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.retention = retention
        self.clock = clock
        self._averages = MinuteAverages()
        self._lock = threading.Lock()

    def record(self, snapshot: MetricsSnapshot) -> None:
        """Add a snapshot; write the minutes it closes."""
        with self._lock:
            self._averages.add(snapshot)
            done = self._averages.completed(snapshot.at)
        self.write(done)

    def flush(self) -> None:
        """Write what the open minutes hold so far (at shutdown)."""
        with self._lock:
            pending = self._averages.pending()
            self._averages = MinuteAverages()
        self.write(pending)

    def write(self, points: list[Point]) -> None:
        if not points:
            return
        with self.db.transaction() as db:
            for point in points:
                # merge: a minute written twice (a flush, then the minute closing) is
                # replaced, not duplicated.
                db.merge(MetricPoint(**asdict(point)))

    def prune(self) -> int:
        """Forget minutes older than the retention; how many rows went."""
        cutoff = self.clock() - self.retention
        with self.db.transaction() as db:
            result = db.execute(delete(MetricPoint).where(MetricPoint.minute < cutoff))
        removed = int(getattr(result, "rowcount", 0) or 0)
        if removed:
            log.info("metrics history: pruned %d rows older than %s", removed, cutoff)
        return removed

    def points(
        self, kind: str, key: str, since: datetime, until: datetime, limit: int = MAX_POINTS
    ) -> list[Point]:
        """The minutes of one session or GPU in [since, until), oldest first."""
        query = (
            select(MetricPoint)
            .where(
                MetricPoint.kind == kind,
                MetricPoint.key == key,
                MetricPoint.minute >= since,
                MetricPoint.minute < until,
            )
            .order_by(MetricPoint.minute)
            .limit(limit)
        )
        with self.db.read() as db:
            rows = list(db.scalars(query))
        return [
            Point(
                kind=row.kind,
                key=row.key,
                minute=row.minute,
                samples=row.samples,
                gpu_util=row.gpu_util,
                gpu_active=row.gpu_active,
                cpu_percent=row.cpu_percent,
                fb_used_mib=row.fb_used_mib,
                temperature_c=row.temperature_c,
                power_w=row.power_w,
            )
            for row in rows
        ]
