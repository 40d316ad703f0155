"""Health of Sandman's parts, checked at most once a second however often it is asked.

A load balancer or probe may ask many times a second, and most often when Sandman
is busiest; each answer must come at once, without queueing behind the work. So
the checks (a database round trip, a runtime ping) run at most once per
``max_age`` in a worker thread, one check at a time, and every caller in between
gets the last result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sandman.errors import SandmanError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthReport:
    problems: dict[str, str]  # component -> what is wrong; empty when healthy
    checked_at: float  # monotonic seconds

    @property
    def healthy(self) -> bool:
        return not self.problems


class HealthCheck:
    def __init__(
        self,
        checks: dict[str, Callable[[], None]],
        max_age: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.checks = checks
        self.max_age = max_age
        self.clock = clock
        self._last: HealthReport | None = None
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    def run(self) -> HealthReport:
        """Run every check now (blocking)."""
        problems: dict[str, str] = {}
        for name, check in self.checks.items():
            try:
                check()
            except SandmanError as exc:
                problems[name] = exc.message
            except Exception as exc:
                problems[name] = f"{type(exc).__name__}: {exc}"
        if problems:
            log.warning("health: %s", problems)
        report = HealthReport(problems, self.clock())
        self._last = report
        return report

    def _fresh(self) -> HealthReport | None:
        last = self._last
        if last is not None and self.clock() - last.checked_at < self.max_age:
            return last
        return None

    async def current(self) -> HealthReport:
        """The last report if it is recent enough, else a new one (one check at a time)."""
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        loop = asyncio.get_running_loop()
        lock = self._locks.setdefault(loop, asyncio.Lock())
        async with lock:
            fresh = self._fresh()
            if fresh is not None:
                return fresh
            return await asyncio.to_thread(self.run)
