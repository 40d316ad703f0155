"""How many sessions each MIG placement policy admits, and how long a decision takes.

The same request sequences go through six policies side by side:

* ``first-fit``  - lowest GPU, lowest allowed start that is free;
* ``best-fit``   - the GPU with the fewest free slices left, then its lowest start;
* ``random``     - any valid (GPU, start), uniformly;
* ``lexico``     - the planner before ``sandman.gpu.placement``: the start losing the
                   fewest placements, largest profile first (``placement.best_start``);
* ``fragaware``  - ``sandman.gpu.placement.place_mig``, the planner's policy now, with
                   demand weights learnt online from the requests seen (as the session
                   service does);
* ``static``     - every MIG GPU pre-partitioned with mig-parted's ``all-balanced``
                   layout (2x 1g, 1x 2g, 1x 3g); a request takes a free instance of its
                   profile.

A request nobody can place is lost (no queue), so the admitted share is what the
placement alone decides. Workloads: Poisson arrivals, exponential lifetimes (mean
100), offered load 80/100/130/160% of the machine's compute slices; profile
distributions (by compute slices 1g/2g/3g/4g/7g) uniform, small-heavy, large-heavy
and the two mixes of the earlier bench; 8 and 64 dynamic-MIG GPUs of A100-40GB and
H100-80GB geometry (the same 8-slice tables, so the two give the same figures);
a mixed fleet (4 MIG H100s beside 4 H100s without MIG, 15% of requests asking for a
whole GPU, MIG requests falling back to a whole GPU when no MIG room is left).
The decisions are the pure functions the planner calls (``plan()`` rebuilds its view
of the GPUs from claims on every call; the simulation keeps that view up to date
instead), and the decision time is measured through ``plan()`` itself.

Run: ``.venv/bin/python bench/bench_planner.py`` (8 H100s and the mixed fleet, 3
seeds, a minute or two on 2 cores), ``--full`` (64 GPUs and A100 too, 5 seeds:
most of an hour), ``--quick`` (CI: 2 seeds, short runs). One part at a time:
``--model``, ``--gpus N``, ``--requests N``, ``--seeds N``, ``--dist`` (each
repeatable where it makes sense), ``--mixed yes|no|only``, ``--no-timing``.
``--pooled`` compares first fit with a machine without slot rules.
``--exhaustive 6`` counts every arrival sequence up to length 6 on one A100 and one
H100 where the policy admits fewer / more than first fit. ``--make-db PATH
--sessions N`` writes a session history from the in-process Sandman, and
``--from-db PATH`` replays a Sandman database's MIG sessions on ``--gpus N`` GPUs.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sandman.errors import CapacityExhausted
from sandman.gpu.catalogue import GpuModel, resolve_model, slot_mask
from sandman.gpu.placement import (
    DemandRecorder,
    MigGpu,
    best_start,
    place_mig,
    ranked_profiles,
    shape_of,
)
from sandman.gpu.planner import claim_for, plan
from sandman.gpu.topology import parse_topology
from sandman.gpu.types import Claim, GpuDevice, GpuRequest, MigMode

SEED = 20240611
KINDS = ("1g", "2g", "3g", "4g", "7g")
COMPUTE = {"1g": 1, "2g": 2, "3g": 3, "4g": 4, "7g": 7, "whole": 7}
DISTRIBUTIONS: dict[str, dict[str, float]] = {
    "uniform": {k: 0.2 for k in KINDS},
    "small-heavy": {"1g": 0.6, "2g": 0.25, "3g": 0.1, "4g": 0.03, "7g": 0.02},
    "large-heavy": {"1g": 0.1, "2g": 0.1, "3g": 0.25, "4g": 0.25, "7g": 0.3},
    "55/20/15/5/5": {"1g": 0.55, "2g": 0.2, "3g": 0.15, "4g": 0.05, "7g": 0.05},
    "45/25/20/5/5": {"1g": 0.45, "2g": 0.25, "3g": 0.2, "4g": 0.05, "7g": 0.05},
}
LOADS = (0.8, 1.0, 1.3, 1.6)
BALANCED = {
    "A100-40GB": ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"],
    "H100-80GB": ["1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"],
}
POLICIES = ("first-fit", "best-fit", "random", "lexico", "fragaware", "static")
T95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 8: 2.36, 10: 2.26}

Request = tuple[float, float, str]  # arrival, lifetime, kind ("1g".."7g" or "whole")


def names_by_compute(model: GpuModel) -> dict[str, str]:
    """'1g' -> '1g.5gb' etc.: the plain (not +me, not double-memory) profile per size."""
    out: dict[str, str] = {}
    for p in model.profiles:
        key = f"{p.compute_slices}g"
        if not p.media and key not in out:
            out[key] = p.name
    return out


def workload(dist: dict[str, float], load: float, gpus: int, seed: int, n: int) -> list[Request]:
    rng = random.Random(seed)
    kinds, weights = list(dist), list(dist.values())
    mean_compute = sum(COMPUTE[k] * w for k, w in dist.items())
    rate = load * 7 * gpus / (mean_compute * 100.0)
    t, out = 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        out.append((t, rng.expovariate(1 / 100.0), rng.choices(kinds, weights)[0]))
    return out


# ---- the simulated machine ---------------------------------------------------


@dataclass
class Gpu:
    index: int
    model: GpuModel
    mig: bool  # False: handed out whole only
    used: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    static: bool = False  # pre-partitioned (all-balanced): only its instances are handed out
    static_free: list[tuple[str, int]] = field(default_factory=list)  # (profile, start)

    @property
    def free(self) -> int:
        return self.model.memory_slices - bin(self.used).count("1") if self.mig else 0


Choice = tuple[int, int]  # (gpu position, start); start -1: the whole GPU
Decide = Callable[[list[Gpu], str, random.Random, DemandRecorder], Choice | None]


def _candidates(gpus: list[Gpu], name: str) -> list[tuple[Gpu, int]]:
    out: list[tuple[Gpu, int]] = []
    for g in gpus:
        p = g.model.profile(name) if g.mig else None
        if p is None or g.counts.get(name, 0) >= p.max_count:
            continue
        out.extend((g, s) for s in p.starts if not g.used & slot_mask(s, p.size))
    return out


def first_fit(gpus: list[Gpu], name: str, rng: random.Random, d: DemandRecorder) -> Choice | None:
    c = _candidates(gpus, name)
    return (c[0][0].index, c[0][1]) if c else None


def best_fit(gpus: list[Gpu], name: str, rng: random.Random, d: DemandRecorder) -> Choice | None:
    c = _candidates(gpus, name)
    if not c:
        return None
    g, s = min(c, key=lambda x: (x[0].free, x[0].index, x[1]))
    return g.index, s


def random_fit(gpus: list[Gpu], name: str, rng: random.Random, d: DemandRecorder) -> Choice | None:
    c = _candidates(gpus, name)
    if not c:
        return None
    g, s = rng.choice(c)
    return g.index, s


def lexico(gpus: list[Gpu], name: str, rng: random.Random, d: DemandRecorder) -> Choice | None:
    best: tuple[tuple[tuple[int, ...], int, int, int], int, int] | None = None
    for g in gpus:
        p = g.model.profile(name) if g.mig else None
        choice = best_start(g.model, g.used, g.counts, False, p) if p else None
        if p is None or choice is None:
            continue
        key = (choice[0], g.free - p.size, g.index, choice[1])
        if best is None or key < best[0]:
            best = (key, g.index, choice[1])
    return (best[1], best[2]) if best else None


def fragaware(gpus: list[Gpu], name: str, rng: random.Random, d: DemandRecorder) -> Choice | None:
    mig = [g for g in gpus if g.mig]
    views = [MigGpu(g.index, f"GPU {g.index}", g.model, g.used, g.counts) for g in mig]
    chosen = place_mig(name, views, d.weights())
    return (mig[chosen.gpu].index, chosen.start) if chosen else None


def static_fit(gpus: list[Gpu], name: str, rng: random.Random, d: DemandRecorder) -> Choice | None:
    for g in gpus:
        for prof, s in g.static_free:
            if prof == name:
                return g.index, s
    return None


DECIDE: dict[str, Decide] = {
    "first-fit": first_fit,
    "best-fit": best_fit,
    "random": random_fit,
    "lexico": lexico,
    "fragaware": fragaware,
    "static": static_fit,
}


def machine(model: GpuModel, mig: int, whole: int, static: bool) -> list[Gpu]:
    gpus = [Gpu(i, model, True) for i in range(mig)]
    gpus += [Gpu(mig + i, model, False) for i in range(whole)]
    if static:
        topo = parse_topology({"gpus": [{"model": model.key, "instances": BALANCED[model.key]}]})
        layout = [(s.profile, s.start) for s in topo.gpus[0].instances]
        for g in gpus[:mig]:
            g.static, g.static_free = True, sorted(layout, key=lambda x: x[1])
    return gpus


def _whole(gpus: list[Gpu], policy: str) -> Choice | None:
    """A whole-GPU request: fragaware takes a GPU without MIG before an empty MIG GPU;
    the others take the lowest index, as the planner did (a 7g is no larger)."""
    free_whole = [g for g in gpus if not g.mig and g.counts.get("whole", 0) == 0]
    empty_mig = [g for g in gpus if g.mig and g.used == 0 and not g.static]
    order = (
        free_whole + empty_mig
        if policy == "fragaware"
        else sorted(free_whole + empty_mig, key=lambda g: g.index)
    )
    return (order[0].index, -1) if order else None


def simulate(
    requests: Sequence[Request], model: GpuModel, policy: str, mig: int, whole: int = 0
) -> tuple[int, float]:
    """Requests admitted and compute-slice-hours admitted (lifetimes in hours/100)."""
    gpus = machine(model, mig, whole, policy == "static")
    names = names_by_compute(model)
    rng, demand = random.Random(SEED), DemandRecorder()
    active: list[tuple[float, int, int, str, int]] = []
    admitted, hours = 0, 0.0
    for n, (t, life, kind) in enumerate(requests):
        while active and active[0][0] <= t:
            _, _, i, prof, s = heapq.heappop(active)
            _release(gpus[i], prof, s)
        name = names.get(kind, "whole")
        if kind != "whole":
            p = model.profile(name)
            assert p is not None
            demand.record(shape_of(p))
        choice = None if kind == "whole" else DECIDE[policy](gpus, name, rng, demand)
        if choice is None and (kind == "whole" or whole):
            choice = _whole(gpus, policy)  # a whole request, or a MIG request's fallback
            name = "whole" if choice and not gpus[choice[0]].mig else names["7g"]
            if choice and gpus[choice[0]].mig:
                choice = (choice[0], 0)
        if choice is None:
            continue
        i, s = choice
        _hold(gpus[i], name, s)
        heapq.heappush(active, (t + life, n, i, name, s))
        admitted += 1
        hours += COMPUTE[kind] * life / 100.0
    return admitted, hours


def _hold(g: Gpu, name: str, s: int) -> None:
    g.counts[name] = g.counts.get(name, 0) + 1
    if name == "whole":
        return
    p = g.model.profile(name)
    assert p is not None
    g.used |= slot_mask(s, p.size)
    if g.static:
        g.static_free.remove((name, s))


def _release(g: Gpu, name: str, s: int) -> None:
    g.counts[name] -= 1
    if name == "whole":
        return
    p = g.model.profile(name)
    assert p is not None
    g.used &= ~slot_mask(s, p.size)
    if g.static:
        g.static_free = sorted([*g.static_free, (name, s)], key=lambda x: x[1])


# ---- the report --------------------------------------------------------------


@dataclass
class Row:
    label: str
    share: dict[str, float]  # policy -> mean admitted share
    hours: dict[str, float]  # policy -> mean slice-hours, relative to first fit
    gain: float  # fragaware over first fit, mean over seeds (relative)
    half: float  # its 95% confidence half-width


def run_workload(
    label: str,
    model: GpuModel,
    dist: dict[str, float],
    load: float,
    mig: int,
    whole: int,
    seeds: int,
    n: int,
) -> Row:
    shares: dict[str, list[float]] = {p: [] for p in POLICIES}
    hours: dict[str, list[float]] = {p: [] for p in POLICIES}
    gains = []
    for k in range(seeds):
        reqs = workload(dist, load, mig + whole, SEED + k, n)
        for policy in POLICIES:
            ok, h = simulate(reqs, model, policy, mig, whole)
            shares[policy].append(ok / n)
            hours[policy].append(h)
        gains.append(shares["fragaware"][-1] / shares["first-fit"][-1] - 1)
    base_hours = statistics.mean(hours["first-fit"])
    sd = statistics.stdev(gains) if len(gains) > 1 else 0.0
    return Row(
        label,
        {p: statistics.mean(v) for p, v in shares.items()},
        {p: statistics.mean(v) / base_hours - 1 for p, v in hours.items()},
        statistics.mean(gains),
        T95.get(len(gains), 2.0) * sd / len(gains) ** 0.5,
    )


def print_header() -> None:
    cols = "".join(f"{p:>10}" for p in POLICIES)
    print(f"{'workload':<38}{cols}{'gain vs first fit':>22}{'slice-h':>9}")


def print_row(r: Row) -> None:
    cols = "".join(f"{r.share[p]:>10.1%}" for p in POLICIES)
    gain = f"{r.gain * 100:+.2f}% ±{r.half * 100:.2f}"
    print(f"{r.label:<38}{cols}{gain:>22}{r.hours['fragaware'] * 100:>+8.1f}%", flush=True)


def time_decisions(model: GpuModel, n_gpus: int) -> tuple[float, float]:
    """Median and p95 of one plan() call (demand weights given) on a machine half full."""
    rng = random.Random(SEED)
    devices = [
        GpuDevice(i, f"GPU-{i:08x}-0000-0000-0000-000000000000", model.display_name, model.key,
                  model.memory_mib, 0, 0, 30, 60.0, model.power_limit_w, MigMode.DYNAMIC)
        for i in range(n_gpus)
    ]  # fmt: skip
    names = names_by_compute(model)
    demand = DemandRecorder().weights()
    claims: list[Claim] = []
    while sum(c.size for c in claims) < 4 * n_gpus:
        req = GpuRequest(mig_profile=names[rng.choice(["1g", "1g", "2g", "3g"])])
        with contextlib.suppress(CapacityExhausted):
            claims.append(claim_for(plan(req, devices, claims, demand=demand)[0]))
    samples = []
    for i in range(2000):
        req = GpuRequest(mig_profile=names[KINDS[i % len(KINDS)]])
        t0 = time.perf_counter()
        with contextlib.suppress(CapacityExhausted):
            plan(req, devices, claims, allow_fallback=False, demand=demand)
        samples.append((time.perf_counter() - t0) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95)]


def from_db(path: str, model: GpuModel, n_gpus: int) -> None:
    """Replay the MIG sessions of a Sandman database (arrival, lifetime, compute size)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = db.execute(
        "SELECT created_at, COALESCE(ended_at, expires_at), mig_profile FROM sessions "
        "WHERE mig_profile IS NOT NULL ORDER BY created_at"
    ).fetchall()
    db.close()
    reqs: list[Request] = []
    t0: datetime | None = None
    for created, ended, profile in rows:
        start, end = datetime.fromisoformat(created), datetime.fromisoformat(ended)
        t0 = t0 or start
        kind = str(profile).split(".")[0]
        if kind in KINDS:
            life = max(1.0, (end - start).total_seconds())
            reqs.append(((start - t0).total_seconds(), life, kind))
    print(f"replay of {len(reqs)} MIG sessions from {path} on {n_gpus}x {model.key}")
    print(f"{'policy':<12}{'admitted':>10}{'share':>8}{'slice-hours':>13}")
    for policy in POLICIES:
        ok, h = simulate(reqs, model, policy, n_gpus)
        share = ok / len(reqs) if reqs else 0.0
        print(f"{policy:<12}{ok:>10}{share:>8.1%}{h * 100 / 3600:>13.1f}")


def simulate_pooled(
    requests: Sequence[Request], model: GpuModel, n_gpus: int, best: bool = False
) -> int:
    """Requests admitted by a machine without fragmentation inside a GPU: each GPU a pool
    of compute and memory slices with no start rules, a request taking its profile's
    slices from the first GPU that has them (``best``: from the one left with the fewest
    free memory slices). The gap to first fit on the real geometry is what the slot
    rules cost; it is not a bound on what a placement policy can gain, since greedy
    admission is not optimal packing."""
    names = names_by_compute(model)
    compute = max(p.compute_slices for p in model.profiles)  # 7
    free = [[compute, model.memory_slices] for _ in range(n_gpus)]
    active: list[tuple[float, int, int, int, int]] = []
    admitted = 0
    for n, (t, life, kind) in enumerate(requests):
        while active and active[0][0] <= t:
            _, _, i, c, m = heapq.heappop(active)
            free[i][0] += c
            free[i][1] += m
        p = model.profile(names[kind])
        assert p is not None
        c, m = p.compute_slices, p.memory_slices
        fits = [i for i, f in enumerate(free) if f[0] >= c and f[1] >= m]
        if not fits:
            continue
        i = min(fits, key=lambda i: (free[i][1], i)) if best else fits[0]
        free[i][0] -= c
        free[i][1] -= m
        heapq.heappush(active, (t + life, n, i, c, m))
        admitted += 1
    return admitted


def pooled_gains(model: GpuModel, n_gpus: int, seeds: int, n: int) -> None:
    """The pooled machine's gain over first fit (first fit / best fit on the pools)."""
    print(f"a machine without slot rules vs first fit; {n_gpus}x {model.key}, {seeds} seeds")
    print("cells: pools with first fit / with best fit, gain over first fit in %")
    print(f"{'distribution':<16}" + "".join(f"{load:>16.0%}" for load in LOADS))
    heavy: list[tuple[float, float]] = []
    for dname, dist in DISTRIBUTIONS.items():
        cells = []
        for load in LOADS:
            first, best = [], []
            for k in range(seeds):
                reqs = workload(dist, load, n_gpus, SEED + k, n)
                ff, _ = simulate(reqs, model, "first-fit", n_gpus)
                first.append(simulate_pooled(reqs, model, n_gpus) / ff - 1)
                best.append(simulate_pooled(reqs, model, n_gpus, best=True) / ff - 1)
            pair = (statistics.mean(first), statistics.mean(best))
            cells.append(f"{pair[0] * 100:+.2f} / {pair[1] * 100:+.2f}")
            if load >= 1.3:
                heavy.append(pair)
        print(f"{dname:<16}" + "".join(f"{c:>16}" for c in cells), flush=True)
    for what, k in (("first fit", 0), ("best fit", 1)):
        gains = [h[k] for h in heavy]
        print(
            f"pools with {what}, >=130% load: mean {statistics.mean(gains):+.2%}, "
            f"largest {max(gains):+.2%}, smallest {min(gains):+.2%}"
        )


def make_db(path: str, sessions: int, seed: int = SEED) -> None:
    """A session history for ``--from-db``: the in-process Sandman (the real session
    service and planner, the fake container runtime of the tests, 8 simulated dynamic
    H100s) takes ``sessions`` MIG requests of the 55/20/15/5/5 mix at 100% offered load,
    Poisson arrivals and exponential lifetimes (mean 2 h), on a simulated clock; each
    session is deleted when its lifetime is up (the last ones after the last request),
    and a request with no room is refused."""
    import tempfile
    from datetime import UTC, timedelta
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' fakes
    from tests.fakes.runtime import FakeRuntime
    from tests.unit.api.conftest import fake_core

    from sandman.domain import SessionStatus
    from sandman.services.requests import SessionRequest

    names = names_by_compute(resolve_model("H100-80GB"))
    reqs = workload(DISTRIBUTIONS["55/20/15/5/5"], 1.0, 8, seed, sessions)
    clock = [datetime(2026, 1, 5, 8, tzinfo=UTC)]
    start = clock[0]
    with tempfile.TemporaryDirectory() as root:
        settings = {"gpu_topology": "h100-80gb-x8", "max_ttl_minutes": 100_000}
        core = fake_core(Path(root), FakeRuntime(), **settings, default_ttl_minutes=100_000)
        core.sessions.clock = lambda: clock[0]
        ends: list[tuple[datetime, str]] = []
        refused = 0
        for k, (t, life, kind) in enumerate(reqs):
            at = start + timedelta(hours=t / 50)  # mean lifetime 100 -> 2 h
            while ends and ends[0][0] <= at:
                clock[0], sid = heapq.heappop(ends)
                core.sessions.end(sid, SessionStatus.DELETED, "deleted by its user")
            clock[0] = at
            request = SessionRequest(user_id=f"user{k}", gpu=GpuRequest(mig_profile=names[kind]))
            try:
                made = core.sessions.create(request)
            except CapacityExhausted:
                refused += 1
                continue
            heapq.heappush(ends, (at + timedelta(hours=life / 50), made.session.id))
        while ends:
            clock[0], sid = heapq.heappop(ends)
            core.sessions.end(sid, SessionStatus.DELETED, "deleted by its user")
        core.stop()
        Path(root, "sandman.db").replace(path)
    print(f"{path}: {sessions - refused} sessions, {refused} refused for room")


def exhaustive(model: GpuModel, length: int) -> tuple[int, int, int]:
    """Every arrival sequence (no departures) of the plain profiles up to ``length`` on
    one empty GPU, fragaware (prior weights) against first fit: in how many sequences it
    admits fewer, more, and how many sequences in all."""
    names = [p.name for p in ranked_profiles(model)]
    fewer = more = total = 0

    def walk(ours: Gpu, theirs: Gpu, diff: int, depth: int) -> None:
        nonlocal fewer, more, total
        for name in names:
            o, t = _copy(ours), _copy(theirs)
            mine = fragaware([o], name, random.Random(0), _PRIOR_ONLY)
            ff = first_fit([t], name, random.Random(0), _PRIOR_ONLY)
            if mine:
                _hold(o, name, mine[1])
            if ff:
                _hold(t, name, ff[1])
            d = diff + (mine is not None) - (ff is not None)
            total += 1
            fewer += d < 0
            more += d > 0
            if depth + 1 < length:
                walk(o, t, d, depth + 1)

    walk(Gpu(0, model, True), Gpu(0, model, True), 0, 0)
    return fewer, more, total


_PRIOR_ONLY = DemandRecorder()


def _copy(g: Gpu) -> Gpu:
    return Gpu(g.index, g.model, g.mig, g.used, dict(g.counts))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="CI: 8 GPUs, 2 seeds, short runs")
    ap.add_argument("--full", action="store_true", help="64 GPUs, A100 too, 5 seeds")
    ap.add_argument("--from-db", metavar="PATH", help="replay this Sandman database")
    ap.add_argument("--make-db", metavar="PATH", help="write a session history to replay")
    ap.add_argument("--sessions", type=int, default=400, help="requests for --make-db")
    ap.add_argument("--gpus", type=int, help="GPUs: for --from-db (8), or one machine size")
    ap.add_argument("--model", action="append", help="A100-40GB or H100-80GB (repeatable)")
    ap.add_argument("--dist", action="append", choices=list(DISTRIBUTIONS), help="repeatable")
    ap.add_argument("--seeds", type=int, help="seeds per workload")
    ap.add_argument("--requests", type=int, help="requests per sequence")
    ap.add_argument("--mixed", choices=("yes", "no", "only"), default="yes", help="mixed fleet")
    ap.add_argument("--pooled", action="store_true", help="a machine without slot rules")
    ap.add_argument("--no-timing", action="store_true", help="skip the decision-time figure")
    ap.add_argument(
        "--exhaustive", type=int, metavar="LEN", help="count every arrival sequence up to LEN"
    )
    args = ap.parse_args(argv)
    h100 = resolve_model("H100-80GB")
    if args.exhaustive:
        print(f"every arrival sequence up to {args.exhaustive} on one GPU, vs first fit")
        for key in args.model or ("A100-40GB", "H100-80GB"):
            fewer, more, total = exhaustive(resolve_model(key), args.exhaustive)
            print(f"{key:<12} sequences {total:>7}  fewer {fewer:>6}  more {more:>6}")
        return
    if args.pooled:
        for key in args.model or ("H100-80GB",):
            pooled_gains(resolve_model(key), args.gpus or 8, args.seeds or 3, args.requests or 3000)
        return
    if args.make_db:
        make_db(args.make_db, args.sessions)
        return
    if args.from_db:
        model = resolve_model(args.model[0]) if args.model else h100
        from_db(args.from_db, model, args.gpus or 8)
        return
    seeds = args.seeds or (2 if args.quick else 5 if args.full else 3)
    models = tuple(args.model or (("H100-80GB", "A100-40GB") if args.full else ("H100-80GB",)))
    sizes = ((8, 1500),) if args.quick else ((8, 3000), (64, 6000)) if args.full else ((8, 3000),)
    if args.gpus:
        sizes = ((args.gpus, args.requests or (3000 if args.gpus <= 8 else 6000)),)
    elif args.requests:
        sizes = tuple((g, args.requests) for g, _ in sizes)
    dists = {d: DISTRIBUTIONS[d] for d in args.dist} if args.dist else DISTRIBUTIONS
    print(f"admitted share per policy; {seeds} seeds; gain = fragaware / first-fit - 1, 95% CI")
    print(f"sequences of {', '.join(f'{n} requests on {g} GPUs' for g, n in sizes)}")
    print_header()
    heavy: list[Row] = []
    every: list[Row] = []
    for key in models if args.mixed != "only" else ():
        model = resolve_model(key)
        for n_gpus, n in sizes:
            for dname, dist in dists.items():
                for load in LOADS:
                    label = f"{n_gpus}x {key} {dname} {load:.0%}"
                    row = run_workload(label, model, dist, load, n_gpus, 0, seeds, n)
                    print_row(row)
                    every.append(row)
                    if load >= 1.3:
                        heavy.append(row)
    if args.mixed != "no":
        mixed_dist = {**DISTRIBUTIONS["55/20/15/5/5"], "whole": 0.15}
        for load in LOADS:
            label = f"mixed 4 MIG + 4 whole H100 {load:.0%}"
            row = run_workload(label, h100, mixed_dist, load, 4, 4, seeds, sizes[0][1])
            print_row(row)
            every.append(row)
    print()
    if heavy:
        mean_heavy = statistics.mean(r.gain for r in heavy)
        print(f"fragaware vs first fit at >=130% load, mean over distributions: {mean_heavy:+.2%}")
    if every:
        worst = min(every, key=lambda r: r.gain)
        print(f"worst workload: {worst.label}: {worst.gain:+.2%} ±{worst.half:.2%}")
    if args.no_timing:
        return
    print()
    print(f"{'decision time (plan)':<22}{'median':>10}{'p95':>10}")
    for n_gpus in (8, 64):
        med, p95 = time_decisions(h100, n_gpus)
        print(f"{n_gpus:>3} x H100-80GB{'':<7}{med:>8.0f}us{p95:>8.0f}us")


if __name__ == "__main__":
    main(sys.argv[1:])
