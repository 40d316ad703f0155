"""The health check runs its probes at most once per ``max_age``, one run at a time."""

from __future__ import annotations

import asyncio
import threading

from sandman.errors import RuntimeUnavailable
from sandman.services.health import HealthCheck


def test_results_are_reused_while_fresh_and_failures_are_reported() -> None:
    now = [100.0]
    calls = {"database": 0, "docker": 0}
    broken = [False]

    def database() -> None:
        calls["database"] += 1

    def docker() -> None:
        calls["docker"] += 1
        if broken[0]:
            raise RuntimeUnavailable("the Docker engine does not answer")

    health = HealthCheck(
        {"database": database, "docker": docker}, max_age=1.0, clock=lambda: now[0]
    )

    async def ask() -> bool:
        return (await health.current()).healthy

    assert asyncio.run(ask()) is True
    broken[0] = True
    now[0] += 0.5
    assert asyncio.run(ask()) is True  # the result is half a second old: reused
    assert calls == {"database": 1, "docker": 1}
    now[0] += 0.6
    report = asyncio.run(health.current())
    assert not report.healthy
    assert report.problems == {"docker": "the Docker engine does not answer"}
    assert calls == {"database": 2, "docker": 2}


def test_concurrent_callers_share_one_run() -> None:
    release = threading.Event()
    runs = [0]

    def slow() -> None:
        runs[0] += 1
        release.wait(5)

    health = HealthCheck({"database": slow}, max_age=60)

    async def many() -> list[bool]:
        asked = [asyncio.ensure_future(health.current()) for _ in range(20)]
        await asyncio.sleep(0.05)
        release.set()
        return [report.healthy for report in await asyncio.gather(*asked)]

    assert asyncio.run(many()) == [True] * 20
    assert runs[0] == 1
