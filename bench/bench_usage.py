"""``GET /api/v1/usage`` over a year of ledger for 200 users, against a plain
``SELECT count(*)`` over the same ledger in the same run.

Run::

    .venv/bin/python bench/bench_usage.py [--users 200] [--days 365] [--repeat 15]

The ledger is written straight into the database (a start and an end event per
session, and the day rollup the release hook keeps): every user runs one session
on each working day, 1 to 10 hours, on an H100 MIG profile, a whole H100 or a
share, 20% of them at ``low`` priority; 20 teams of 10, 40 projects. The requests
go through the API in this process (a ``TestClient`` over the fake runtime):
authentication, the rollup's query, the pricing, JSON. Beside each, the report
alone both ways: from the rollup (what the API does) and from every interval
priced one by one (the path before the rollup). Reported: medians and p90s in ms.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import HEADERS, fake_core

from sandman.accounting.reports import GroupBy, Period, Report
from sandman.accounting.service import GRANT_COLUMNS, day_rows
from sandman.accounts.policy import Visibility
from sandman.api.app import create_app
from sandman.store.models import LedgerDay, LedgerEvent

GRANTS = [("1g.10gb", None), ("2g.20gb", None), ("3g.40gb", None), (None, None), (None, 0.5)]


def ledger_rows(users: int, days: int, first: date, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for u in range(users):
        user, team, project = f"user{u:03d}", f"team{u % 20:02d}", f"proj{u % 40:02d}"
        for d in range(days):
            day = first + timedelta(days=d)
            if day.weekday() >= 5:
                continue
            start = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
                seconds=rng.randrange(6 * 3600, 14 * 3600)
            )
            end = start + timedelta(seconds=rng.randrange(3600, 10 * 3600))
            profile, share = rng.choice(GRANTS)
            grant = {
                "session_id": f"{user}-{d}", "user_id": user, "team": team, "project": project,
                "gpu_name": "NVIDIA H100 80GB HBM3", "mig_profile": profile, "gpu_share": share,
                "gpus": 1, "priority": "low" if rng.random() < 0.2 else "normal",
            }  # fmt: skip
            rows.append({**grant, "kind": "start", "at": start})
            rows.append({**grant, "kind": "end", "at": end})
    return rows


def rollup_rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The day rollup of the ended grants, as the release hook would have written it."""
    starts = {e["session_id"]: e for e in events if e["kind"] == "start"}
    ended = [
        ({name: e[name] for name in GRANT_COLUMNS}, starts[e["session_id"]]["at"], e["at"])
        for e in events
        if e["kind"] == "end"
    ]
    return day_rows(ended)


def agree(one: Report, other: Report) -> bool:
    """The same rows, to float rounding (the two paths sum in different orders)."""
    return len(one.rows) == len(other.rows) and all(
        (a.period, a.kind, a.group) == (b.period, b.kind, b.group)
        and math.isclose(a.cost, b.cost, rel_tol=1e-9, abs_tol=1e-6)
        and math.isclose(a.gpu_hours, b.gpu_hours, rel_tol=1e-9, abs_tol=1e-6)
        for a, b in zip(one.rows, other.rows, strict=True)
    )


def timed(call: Any, repeat: int) -> tuple[float, float]:
    call()  # warm
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.9 * (len(samples) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    today = datetime.now(UTC).date()
    this_month = today.replace(day=1)
    first = this_month - timedelta(days=args.days)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    with tempfile.TemporaryDirectory() as root:
        core = fake_core(Path(root), FakeRuntime(), gpu_topology="h100-80gb-x8")
        rows = ledger_rows(args.users, args.days, first, args.seed)
        days = rollup_rows(rows)
        events = len(rows)
        began = time.perf_counter()
        with core.db.transaction() as db:
            for table, values in ((LedgerEvent, rows), (LedgerDay, days)):
                for i in range(0, len(values), 5000):
                    db.execute(insert(table), values[i : i + 5000])
        took = time.perf_counter() - began
        print(f"ledger: {len(rows)} events and {len(days)} day rows for {args.users} users "
              f"over {args.days} days (written in {took:.1f} s)")  # fmt: skip
        del rows, days  # a server does not hold the ledger in memory
        with core.db.read() as db:
            assert db.scalar(select(func.count()).select_from(LedgerEvent)) == events

        def count() -> None:
            with core.db.read() as db:
                db.scalar(select(func.count()).select_from(LedgerEvent))

        cases = [
            ("team, month, last month", "team", "month", last_month, this_month),
            ("user, day, last month", "user", "day", last_month, this_month),
            ("team, month, the year", "team", "month", first, this_month),
            ("user, day, the year", "user", "day", first, this_month),
        ]
        print(f"{'query':34} {'median ms':>10} {'p90 ms':>8}   report alone, median / p90 ms")
        print(f"{'':34} {'':10} {'':8}   {'rollup':>13}   {'intervals':>13}")
        median, p90 = timed(count, args.repeat)
        print(f"{'baseline: SELECT count(*)':34} {median:10.1f} {p90:8.1f}")
        everyone = Visibility(True, "admin")
        with TestClient(create_app(core, run_background=False)) as api:
            for name, group_by, period, start, end in cases:
                params = {
                    "group_by": group_by,
                    "period": period,
                    "from": str(start),
                    "to": str(end),
                }

                def get(params: dict[str, str] = params) -> None:
                    response = api.get("/api/v1/usage", params=params, headers=HEADERS)
                    assert response.status_code == 200, response.text

                median, p90 = timed(get, args.repeat)
                how = (everyone, GroupBy(group_by), Period(period), start, end)
                rollup = timed(lambda how=how: core.usage.report(*how), args.repeat)
                intervals = timed(lambda how=how: core.usage.report_from_intervals(*how), 3)
                assert agree(core.usage.report(*how), core.usage.report_from_intervals(*how))
                print(f"{'GET /usage ' + name:34} {median:10.1f} {p90:8.1f}   "
                      f"{rollup[0]:6.1f} / {rollup[1]:4.0f}   "
                      f"{intervals[0]:6.1f} / {intervals[1]:4.0f}")  # fmt: skip
        core.stop()


if __name__ == "__main__":
    main()
