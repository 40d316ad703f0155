"""What metrics cost: ``/metrics`` render time and size with a session on every MIG
slice of 8 and of 64 simulated H100s (goal: under 50 ms at 64 GPUs), and the
collector's CPU seconds per minute at the default 15 s interval.

Run::

    .venv/bin/python bench/bench_metrics.py [--gpus 8 64] [--scrapes 50]

Each size gets its own Sandman over a runtime that starts nothing (a private data
directory in a tempdir, a topology of H100-80GB GPUs each split into seven
1g.10gb instances, one user's session on every instance). The collector's pass
is what runs every interval: one read of the sessions, the inventory, one
statistics read per session (free here; Docker answers each after its next
one-second sample, a wait rather than work, 64 at a time), the simulated
samples, the history and the rendering of the snapshot's text. A scrape is measured two ways: the
render alone, and a whole ``GET /metrics`` over HTTP from loopback (uvicorn).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.runtime import FakeRuntime  # noqa: E402

from inprocess import free_port, serve  # noqa: E402
from sandman.config import Settings  # noqa: E402
from sandman.core import Sandman  # noqa: E402
from sandman.gpu.types import GpuRequest  # noqa: E402
from sandman.services.requests import SessionRequest  # noqa: E402

INSTANCES = 7  # 1g.10gb per H100-80GB
INTERVAL = 15.0  # the default SANDMAN_METRICS_INTERVAL


def topology(directory: Path, gpus: int) -> Path:
    path = directory / f"h100-x{gpus}.yaml"
    instances = ", ".join(["1g.10gb"] * INSTANCES)
    line = f"  - {{model: H100-SXM5-80GB, mig: static, instances: [{instances}]}}\n"
    path.write_text("gpus:\n" + line * gpus)
    return path


def build(directory: Path, gpus: int) -> tuple[Sandman, FakeRuntime]:
    runtime = FakeRuntime()
    settings = Settings(
        data_dir=directory,
        admin_token="bench-admin-token",
        ssh_mode="direct",
        gpu_topology=str(topology(directory, gpus)),
        start_timeout=5,
        stop_grace_period=0,
        workspace_quota=None,
    )
    core = Sandman(settings, runtime=runtime, announce=lambda _: None, with_gateway=False)
    core.sessions.probe = runtime.probe
    for n in range(gpus * INSTANCES):
        request = SessionRequest(
            user_id=f"u{n:04d}", gpu=GpuRequest(mig_profile="1g.10gb"), team="bench"
        )
        core.sessions.create(request)
    return core, runtime


def ms(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median_ms": round(1000 * statistics.median(ordered), 2),
        "p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 2),
    }


def run(gpus: int, scrapes: int, passes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sandman-bench-metrics-") as tmp:
        core, runtime = build(Path(tmp), gpus)
        try:
            names = [c.name for c in runtime.running()]
            collect_wall, collect_cpu = [], []
            for i in range(passes):
                for name in names:
                    runtime.burn(name, 0.5 * (i % 3))
                cpu, wall = time.process_time(), time.perf_counter()
                snapshot = core.collector.collect()  # renders the snapshot's text as well
                collect_wall.append(time.perf_counter() - wall)
                collect_cpu.append(time.process_time() - cpu)
            registry = core.metrics.registry
            cold = []
            for _ in range(max(5, passes)):
                registry._rendered = (None, b"")  # as after a new snapshot
                start = time.perf_counter()
                registry.prepare(snapshot)
                cold.append(time.perf_counter() - start)
            render = []
            for _ in range(scrapes):
                start = time.perf_counter()
                body = registry.render(snapshot, None)
                render.append(time.perf_counter() - start)
            port = free_port()
            server = serve(core, port)
            http = []
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                client.get("/metrics")
                for _ in range(scrapes):
                    start = time.perf_counter()
                    answer = client.get("/metrics")
                    http.append(time.perf_counter() - start)
                    assert answer.status_code == 200, answer.text
            server.should_exit = True
            per_pass_cpu = statistics.median(collect_cpu)
            return {
                "gpus": gpus,
                "sessions": len(names),
                "series": sum(
                    1 for line in body.decode().splitlines() if line and not line.startswith("#")
                ),
                "bytes": len(body),
                "collect": {
                    **ms(collect_wall),
                    "cpu_ms": round(1000 * per_pass_cpu, 2),
                    "cpu_seconds_per_minute": round(per_pass_cpu * 60 / INTERVAL, 3),
                },
                "snapshot_text": ms(cold),
                "render": ms(render),
                "http_get": ms(http),
            }
        finally:
            core.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--passes", type=int, default=10)
    args = parser.parse_args()
    results = [run(gpus, args.scrapes, args.passes) for gpus in args.gpus]
    print(json.dumps(results, indent=2))
    largest = max(results, key=lambda r: r["gpus"])
    verdict = "meets" if largest["http_get"]["median_ms"] < 50 else "misses"
    print(
        f"/metrics at {largest['gpus']} GPUs: {largest['http_get']['median_ms']} ms "
        f"(median, over HTTP), {largest['bytes']} bytes: {verdict} the 50 ms goal",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
