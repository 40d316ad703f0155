"""How many sessions each MIG placement policy admits, and how long a decision takes.

Streams the same random session workload (fixed seed) through three policies on
a simulated 8-GPU machine and reports the share of requests admitted:

* ``planner``   - sandman.gpu.planner.plan on dynamic-MIG GPUs;
* ``first-fit`` - lowest GPU, lowest allowed start that is free (what a naive
                  dynamic allocator does);
* ``static``    - every GPU pre-partitioned with NVIDIA mig-parted's
                  ``all-balanced`` layout (A100-40GB: 2x 1g.5gb, 1x 2g.10gb,
                  1x 3g.20gb; H100-80GB: 2x 1g.10gb, 1x 2g.20gb, 1x 3g.40gb;
                  NVIDIA/mig-parted deployments/systemd/config-default.yaml);
                  a request is served only by a free instance of its profile.

Workload: Poisson arrivals, exponential session lengths, offered load equal to
the machine's compute slices (a busy shared server, where placement matters).
Profile mix, by compute slices: 1g 55%, 2g 20%, 3g 15%, 4g 5%, 7g 5% - mostly
small interactive sessions with some bigger training jobs. The table repeats the
run with a mix shaped like all-balanced itself (45/25/20/5/5) for comparison.

Run: .venv/bin/python bench/bench_planner.py
"""

from __future__ import annotations

import contextlib
import heapq
import random
import statistics
import time
from collections.abc import Callable

from sandman.errors import CapacityExhausted
from sandman.gpu.catalogue import GpuModel, resolve_model, slot_mask
from sandman.gpu.planner import claim_for, plan
from sandman.gpu.topology import parse_topology
from sandman.gpu.types import Allocation, Claim, GpuDevice, GpuRequest, MigInstance, MigMode

SEED = 20240611
REQUESTS = 4000
MIX = [("1g", 0.55), ("2g", 0.20), ("3g", 0.15), ("4g", 0.05), ("7g", 0.05)]
# a mix shaped like all-balanced itself, to show the result is not an artefact of MIX
MATCHED_MIX = [("1g", 0.45), ("2g", 0.25), ("3g", 0.20), ("4g", 0.05), ("7g", 0.05)]
LOAD = 1.0
BALANCED = {
    "A100-40GB": ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"],
    "H100-80GB": ["1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"],
}

Policy = Callable[[str, list[GpuDevice], list[Claim]], Allocation | None]


def names_by_compute(model: GpuModel) -> dict[str, str]:
    """'1g' -> '1g.5gb' etc.: the plain (not +me, not double-memory) profile per size."""
    out: dict[str, str] = {}
    for p in model.profiles:
        key = f"{p.compute_slices}g"
        if not p.media and key not in out:
            out[key] = p.name
    return out


def make_devices(model: GpuModel, n: int, static: bool) -> list[GpuDevice]:
    devices = []
    for i in range(n):
        instances: tuple[MigInstance, ...] = ()
        if static:
            topo = parse_topology(
                {"gpus": [{"model": model.key, "instances": BALANCED[model.key]}]}
            )
            instances = tuple(
                MigInstance(
                    f"MIG-{i:08x}-{s.start:04x}-0000-0000-000000000000",
                    s.profile,
                    s.start,
                    resolve_model(model.key).profile(s.profile).size,  # type: ignore[union-attr]
                    0,
                )
                for s in topo.gpus[0].instances
            )
        devices.append(
            GpuDevice(
                i,
                f"GPU-{i:08x}-0000-0000-0000-000000000000",
                model.display_name,
                model.key,
                model.memory_mib,
                0,
                0,
                30,
                60.0,
                model.power_limit_w,
                MigMode.STATIC if static else MigMode.DYNAMIC,
                instances,
            )
        )
    return devices


def planner_policy(
    profile: str, devices: list[GpuDevice], claims: list[Claim]
) -> Allocation | None:
    try:
        return plan(GpuRequest(mig_profile=profile), devices, claims, allow_fallback=False)[0]
    except CapacityExhausted:
        return None


def first_fit_policy(
    profile: str, devices: list[GpuDevice], claims: list[Claim]
) -> Allocation | None:
    for d in devices:
        model = resolve_model(d.model)
        p = model.profile(profile)
        assert p is not None
        mine = [c for c in claims if c.gpu_uuid == d.uuid]
        used = 0
        for c in mine:
            used |= slot_mask(c.start, c.size)
        if sum(1 for c in mine if c.profile == profile) >= p.max_count:
            continue
        for s in p.starts:
            if not used & slot_mask(s, p.size):
                return Allocation(d.uuid, "mig_create", p.name, s, p.size, p.memory_mib)
    return None


def simulate(
    model: GpuModel,
    policy: Policy,
    static: bool,
    mix: list[tuple[str, float]],
    n_gpus: int = 8,
) -> tuple[int, int]:
    rng = random.Random(SEED)
    devices = make_devices(model, n_gpus, static)
    names = names_by_compute(model)
    capacity = 7 * n_gpus
    mean_slices = sum(int(k[0]) * w for k, w in mix)
    mean_duration = 100.0
    rate = LOAD * capacity / (mean_slices * mean_duration)
    t = 0.0
    active: list[tuple[float, int, Claim]] = []
    claims: list[Claim] = []
    admitted = 0
    for n in range(REQUESTS):
        t += rng.expovariate(rate)
        duration = rng.expovariate(1 / mean_duration)
        kind = rng.choices([k for k, _ in mix], [w for _, w in mix])[0]
        while active and active[0][0] <= t:
            _, _, gone = heapq.heappop(active)
            claims.remove(gone)
        alloc = policy(names[kind], devices, claims)
        if alloc is not None:
            claim = claim_for(alloc)
            claims.append(claim)
            heapq.heappush(active, (t + duration, n, claim))
            admitted += 1
    return admitted, REQUESTS


def time_decisions(model: GpuModel, n_gpus: int) -> tuple[float, float]:
    """Median and p95 of one plan() call on a machine about half full."""
    rng = random.Random(SEED)
    devices = make_devices(model, n_gpus, static=False)
    names = names_by_compute(model)
    claims: list[Claim] = []
    while sum(c.size for c in claims) < 4 * n_gpus:
        alloc = planner_policy(names[rng.choice(["1g", "1g", "2g", "3g"])], devices, claims)
        if alloc is not None:
            claims.append(claim_for(alloc))
    samples = []
    kinds = [k for k, _ in MIX]
    for i in range(2000):
        req = GpuRequest(mig_profile=names[kinds[i % len(kinds)]])
        t0 = time.perf_counter()
        with contextlib.suppress(CapacityExhausted):
            plan(req, devices, claims, allow_fallback=False)
        samples.append((time.perf_counter() - t0) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95)]


def main() -> None:
    print(f"workload: {REQUESTS} requests per run, seed {SEED}, offered load {LOAD:.0%}")
    print()
    header = f"{'machine':<14}{'mix':<13}{'planner':>9}{'first-fit':>11}{'static':>9}"
    print(header + f"{'vs static':>11}")
    for key in ("H100-80GB", "A100-40GB"):
        model = resolve_model(key)
        for label, mix in (("55/20/15/5/5", MIX), ("45/25/20/5/5", MATCHED_MIX)):
            shares = {}
            for name, policy, static in (
                ("planner", planner_policy, False),
                ("first-fit", first_fit_policy, False),
                ("static", planner_policy, True),
            ):
                ok, total = simulate(model, policy, static, mix)
                shares[name] = ok / total
            gain = (shares["planner"] / shares["static"] - 1) * 100
            print(
                f"8x {key:<11}{label:<13}{shares['planner']:>9.1%}{shares['first-fit']:>11.1%}"
                f"{shares['static']:>9.1%}{gain:>+10.1f}%"
            )
    print()
    print(f"{'decision time':<22}{'median':>10}{'p95':>10}")
    for n in (8, 64):
        med, p95 = time_decisions(resolve_model("H100-80GB"), n)
        print(f"{n:>3} x H100-80GB{'':<7}{med:>8.0f}us{p95:>8.0f}us")


if __name__ == "__main__":
    main()
