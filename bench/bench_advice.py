"""How long the MIG layout advice takes on a month of requests, and what one demand
log write costs a session create.

Advice: 30 days of requests (Poisson arrivals, exponential lengths, a fixed seed)
on static GPUs partitioned 7x1g today, with a profile mix that wants bigger
instances (1g 40%, 2g 25%, 3g 25%, 4g 5%, 7g 5%). Each run replays every request
against every full layout of the model (``accounting.advice.full_layouts``, 38 on
A100 and H100) and today's layout; the first run also enumerates the layouts.
Reported: the median and worst of ``--rounds`` runs per size, and the advice.

Demand log: ``DemandLog.record`` (one insert into SQLite, on a temporary file)
repeated ``--writes`` times; the median and p95 per write.

Run: .venv/bin/python bench/bench_advice.py [--rounds 5] [--writes 500]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.unit.gpu.gpu_helpers import device  # noqa: E402

from sandman.accounting.advice import Ask, advise, full_layouts  # noqa: E402
from sandman.accounting.demand import DemandLog  # noqa: E402
from sandman.gpu.catalogue import resolve_model  # noqa: E402
from sandman.gpu.types import GpuRequest, MigMode  # noqa: E402
from sandman.services.requests import SessionRequest  # noqa: E402
from sandman.store.database import Database  # noqa: E402

SEED = 20261203
DAYS = 30
MIX = {"1g": 0.40, "2g": 0.25, "3g": 0.25, "4g": 0.05, "7g": 0.05}
SIZES = ((1, 1000), (4, 3000), (8, 5000), (8, 20000))  # (GPUs, requests in 30 days)


def workload(model_key: str, requests: int, seed: int) -> list[Ask]:
    """``requests`` over 30 days; mean length sized so that the offered load is
    about the GPUs' slices (a busy month)."""
    model = resolve_model(model_key)
    names: dict[str, str] = {}
    for p in model.profiles:  # the one-memory-slice 1g comes first
        if not p.media:
            names.setdefault(p.name.split(".")[0], p.name)
    rng = random.Random(seed)
    span = DAYS * 24 * 3600.0
    profiles = list(MIX)
    weights = [MIX[p] for p in profiles]
    mean_hours = 4.0
    asks = []
    for _ in range(requests):
        short = rng.choices(profiles, weights)[0]
        asks.append(Ask(rng.uniform(0, span), rng.expovariate(1 / mean_hours), names[short]))
    return sorted(asks, key=lambda a: a.at)


def bench_advice(rounds: int) -> None:
    print(f"advice over {DAYS} days, {rounds} rounds each (ms)")
    print(f"{'GPUs':<12}{'requests':>10}{'median':>10}{'worst':>10}  advice")
    for key in ("A100-40GB", "H100-80GB"):
        model = resolve_model(key)
        full_layouts.cache_clear()
        started = time.perf_counter()
        candidates = len(full_layouts(key))
        enumerate_ms = (time.perf_counter() - started) * 1000
        one_g = next(p.name for p in model.profiles if p.name.startswith("1g."))
        for gpus, requests in SIZES:
            asks = workload(key, requests, SEED + gpus)
            current = [[one_g] * 7 for _ in range(gpus)]
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                advice = advise(model, current, asks)
                times.append((time.perf_counter() - started) * 1000)
            gain = advice.gain_percent
            what = advice.layout.label if advice.layout else "keep"
            more = f"+{gain:.0f}%" if gain is not None else "today's serves none"
            print(
                f"{gpus} x {key:<9}{requests:>7}{statistics.median(times):>10.1f}"
                f"{max(times):>10.1f}  {what} ({more})"
                + (f" [{'; '.join(advice.notes)}]" if advice.notes else "")
            )
        print(f"  {key}: {candidates} full layouts, enumerated in {enumerate_ms:.1f} ms")


def bench_writes(writes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
        db.migrate()
        devices = [device(i, "A100-40GB", MigMode.DYNAMIC) for i in range(8)]
        log = DemandLog(db, lambda: devices, "1g.5gb", 60, timedelta(days=90))
        request = SessionRequest(user_id="ann", gpu=GpuRequest(mig_profile="3g.20gb"))
        times = []
        for i in range(writes):
            started = time.perf_counter()
            log.record(request, "refused" if i % 3 else "started", "no free 3g.20gb")
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        p95 = times[int(len(times) * 0.95)]
        print(
            f"demand log write (SQLite): median {statistics.median(times):.2f} ms, "
            f"p95 {p95:.2f} ms over {writes} writes"
        )
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--writes", type=int, default=500)
    args = parser.parse_args()
    bench_advice(args.rounds)
    print()
    bench_writes(args.writes)


if __name__ == "__main__":
    main()
