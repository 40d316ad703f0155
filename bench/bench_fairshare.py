"""A replayed week of GPU requests: Sandman's admission policy against plain
first-come-first-served, on the same arrivals, in one run.

Run::

    .venv/bin/python bench/bench_fairshare.py [--gpus 4] [--load 1.2] [--days 7] [--seed 1]

A discrete-event simulation over the pure policy core (``sandman.policy``) and the
real MIG planner: ``--gpus`` A100-40GB with MIG instances made on demand (7 slices
each), three teams with guarantees (ml 40%, vision 35%, nlp 25% of the slices),
Poisson arrivals at ``--load`` times the capacity in slice-hours, profiles 1g to
7g, 10% high, 70% normal and 20% low priority, TTLs of 1 to 8 hours, and sessions
that end between half-way and at their TTL.

- **FCFS**: one queue in arrival order; the head waits until it fits (nothing passes it).
- **Sandman**: the queue ordered by priority, then fair share (usage decayed with
  a 7-day half-life), then age; any request that fits starts; a queued request of
  a team below its guarantee (or of high priority) preempts unprotected sessions
  of no higher priority, the least disruptive set first.

It reports the share of offered slice-hours served within the week, each team's
mean held slices against its guarantee while it had demand, the median and p90
queue wait, the ETA error at submission (the simulated ETA against the actual
start; a sample of ``--eta-every`` requests) and the preemptions.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.unit.gpu.gpu_helpers import device

from sandman.gpu.types import Claim, GpuDevice, GpuRequest
from sandman.policy.preemption import Running, choose_victims
from sandman.policy.preemption import reach as preemption_reach
from sandman.policy.queue import (
    Holding,
    UsageEvent,
    Waiting,
    decayed_usage,
    order,
    planner_for,
    simulate,
)
from sandman.policy.quotas import Priority
from sandman.policy.units import grant_slices

START = datetime(2026, 11, 23, tzinfo=UTC)
TEAMS = {"ml": 0.40, "vision": 0.35, "nlp": 0.25}
PROFILES = [
    ("1g.5gb", 0.35),
    ("2g.10gb", 0.25),
    ("3g.20gb", 0.2),
    ("4g.20gb", 0.1),
    ("7g.40gb", 0.1),
]
PRIORITIES = [(Priority.HIGH, 0.1), (Priority.NORMAL, 0.7), (Priority.LOW, 0.2)]
HALF_LIFE = timedelta(days=7)


@dataclass
class Job:
    id: str
    team: str
    profile: str
    priority: Priority
    arrives: datetime
    ttl: timedelta
    runs_for: timedelta
    slices: float
    started: datetime | None = None
    eta: datetime | None = None
    eta_sampled: bool = False
    claims: tuple[Claim, ...] = ()
    ends: datetime | None = None
    served: float = 0.0  # slice-hours
    preempted: int = 0


def devices(count: int) -> list[GpuDevice]:
    """``count`` A100-40GB whose MIG instances are made on demand."""
    return [device(i, "A100-40GB") for i in range(count)]


def pick(rng: random.Random, weighted: list[tuple[Any, float]]) -> Any:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def arrivals(rng: random.Random, capacity: float, load: float, days: int) -> list[Job]:
    mean_slices = sum(grant_slices("A100-40GB", p) * w for p, w in PROFILES)
    mean_hours = 0.75 * 4.5  # TTL uniform 1-8 h, run 50-100% of it
    rate_per_hour = load * capacity / (mean_slices * mean_hours)
    jobs, moment, n = [], START, 0
    while moment < START + timedelta(days=days):
        moment += timedelta(hours=rng.expovariate(rate_per_hour))
        profile = pick(rng, PROFILES)
        ttl = timedelta(hours=rng.uniform(1, 8))
        jobs.append(
            Job(
                id=f"j{n}",
                team=pick(rng, list(TEAMS.items())),
                profile=profile,
                priority=pick(rng, PRIORITIES),
                arrives=moment,
                ttl=ttl,
                runs_for=ttl * rng.uniform(0.5, 1.0),
                slices=grant_slices("A100-40GB", profile),
            )
        )
        n += 1
    return jobs


@dataclass
class World:
    sandman: bool
    gpus: list[GpuDevice]
    capacity: float
    end: datetime
    eta_every: int
    queue: list[Job] = field(default_factory=list)
    running: dict[str, Job] = field(default_factory=dict)
    done: list[Job] = field(default_factory=list)
    usage: list[UsageEvent] = field(default_factory=list)
    held_by_team: dict[str, float] = field(default_factory=dict)  # slice-hours while wanting
    wanting_hours: dict[str, float] = field(default_factory=dict)
    preemptions: int = 0
    arrived: int = 0

    def __post_init__(self) -> None:
        self.planner = planner_for(self.gpus, None)

    def claims(self) -> list[Claim]:
        return [c for job in self.running.values() for c in job.claims]

    def waiting(self, now: datetime) -> list[Waiting]:
        items = [
            Waiting(
                j.id,
                j.id,
                j.team,
                j.priority,
                j.arrives,
                GpuRequest(j.profile),
                int(j.ttl.total_seconds() // 60) or 1,
            )
            for j in self.queue
        ]
        if not self.sandman:
            return sorted(items, key=lambda w: (w.created_at, w.session_id))
        return order(items, decayed_usage(self.usage, HALF_LIFE, now))

    def start(self, job: Job, claims: tuple[Claim, ...], now: datetime) -> None:
        job.started, job.claims, job.ends = now, claims, now + job.runs_for
        self.queue.remove(job)
        self.running[job.id] = job

    def stop(self, job: Job, now: datetime, preempted: bool = False) -> None:
        started = job.started or now
        hours = (now - started).total_seconds() / 3600
        job.served += job.slices * hours
        self.usage.append(UsageEvent(job.team, job.slices * hours, now))
        del self.running[job.id]
        if preempted:
            job.preempted += 1
            self.preemptions += 1
            job.started, job.claims, job.ends = None, (), None
            job.runs_for -= now - started
            job.arrives = now
            self.queue.append(job)
        else:
            self.done.append(job)

    def dispatch(self, now: datetime) -> None:
        """Start what fits; after a preemption, look again (bounded)."""
        for _ in range(100):
            if not self._dispatch_once(now):
                return

    def _dispatch_once(self, now: datetime) -> bool:
        """One pass over the queue; True when a preemption freed slices."""
        by_id = {j.id: j for j in self.queue}
        held = self.claims()
        for item in self.waiting(now):
            placed = self.planner(item.request, held)
            if placed is None:
                if not self.sandman:
                    return False  # FCFS: nothing passes the head
                if self.preempt(by_id[item.session_id], now):
                    return True
                continue
            self.start(by_id[item.session_id], tuple(placed), now)
            held = held + list(placed)
        return False

    def team_slices(self, team: str) -> float:
        return sum(j.slices for j in self.running.values() if j.team == team)

    def preempt(self, job: Job, now: datetime) -> bool:
        guarantee = TEAMS[job.team] * self.capacity
        reach = preemption_reach(job.priority, self.team_slices(job.team), job.slices, guarantee)
        if reach is None:
            return False
        running = [
            Running(r.id, r.id, r.team, r.priority, r.started or now, r.slices)
            for r in self.running.values()
        ]
        guarantees = {team: share * self.capacity for team, share in TEAMS.items()}
        claims = self.claims()

        def fits_without(ids: frozenset[str]) -> bool:
            left = [c for r in self.running.values() if r.id not in ids for c in r.claims]
            return self.planner(GpuRequest(job.profile), left) is not None

        victims = choose_victims(running, guarantees, reach, fits_without)
        if not victims or len(claims) == 0:
            return False
        for victim in victims:
            self.stop(self.running[victim.session_id], now, preempted=True)
        # The freed slices are the requester's: it starts on them at once, before
        # anything else in the queue could take them.
        placed = self.planner(GpuRequest(job.profile), self.claims())
        if placed is not None:
            self.start(job, tuple(placed), now)
        return True

    def eta(self, job: Job, now: datetime) -> datetime | None:
        queue = self.waiting(now)
        holding = [
            Holding(r.id, (r.started or now) + r.ttl, r.claims) for r in self.running.values()
        ]
        return simulate(queue, holding, self.planner, now).get(job.id)


def run(world: World, jobs: list[Job]) -> dict[str, Any]:
    events: list[tuple[datetime, int, str, str]] = []
    for n, job in enumerate(jobs):
        heapq.heappush(events, (job.arrives, n, "arrive", job.id))
    by_id = {j.id: j for j in jobs}
    seq = len(jobs)
    now = START
    last = START
    while events:
        moment, _, kind, job_id = heapq.heappop(events)
        if moment > world.end:
            break
        span = (moment - last).total_seconds() / 3600
        for team in TEAMS:
            if any(j.team == team for j in world.queue) or world.team_slices(team) > 0:
                world.wanting_hours[team] = world.wanting_hours.get(team, 0) + span
                world.held_by_team[team] = (
                    world.held_by_team.get(team, 0) + world.team_slices(team) * span
                )
        last = now = moment
        job = by_id[job_id]
        if kind == "arrive":
            world.arrived += 1
            world.queue.append(job)
            if world.eta_every and world.arrived % world.eta_every == 0:
                job.eta_sampled = True
        elif kind == "end":
            if job.id not in world.running or job.ends != moment:
                continue  # preempted meanwhile; its new end is another event
            world.stop(job, now)
        before = set(world.running)
        sampled = [j for j in world.queue if j.eta_sampled and j.eta is None]
        for waiting in sampled:
            waiting.eta = world.eta(waiting, now)
        world.dispatch(now)
        for started in set(world.running) - before:
            ended = world.running[started]
            seq += 1
            heapq.heappush(events, (ended.ends or now, seq, "end", started))
            if ended.eta_sampled and ended.eta is None:
                ended.eta = now
    for job in list(world.running.values()):
        world.stop(job, world.end)
    offered = sum(
        j.slices * j.runs_for.total_seconds() / 3600 for j in jobs if j.arrives < world.end
    )
    served = sum(j.served for j in jobs)
    waits = [
        (j.started or world.end) - j.arrives
        for j in jobs
        if j.arrives < world.end and j.preempted == 0 and (j.started or j in world.queue)
    ]
    waited = sorted(w.total_seconds() / 60 for w in waits)
    eta_errors = sorted(
        abs((j.started - j.eta).total_seconds()) / 60
        for j in jobs
        if j.eta_sampled and j.eta is not None and j.started is not None and j.preempted == 0
    )
    return {
        "served_share": round(served / offered, 3),
        "team_held_vs_guarantee": {
            team: round(
                world.held_by_team.get(team, 0)
                / max(world.wanting_hours.get(team, 0), 1e-9)
                / (share * world.capacity),
                2,
            )
            for team, share in TEAMS.items()
        },
        "wait_minutes": {"p50": percentile(waited, 50), "p90": percentile(waited, 90)},
        "eta_error_minutes": {
            "p50": percentile(eta_errors, 50),
            "p90": percentile(eta_errors, 90),
            "n": len(eta_errors),
        },
        "preemptions": world.preemptions,
    }


def percentile(values: list[float], p: int) -> float:
    if not values:
        return 0.0
    return round(statistics.quantiles(values, n=100, method="inclusive")[p - 1], 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=4)
    parser.add_argument("--load", type=float, default=1.2)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--eta-every", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    gpus = devices(args.gpus)
    capacity = 7.0 * args.gpus
    end = START + timedelta(days=args.days)
    results = {}
    for name, sandman in (("fcfs", False), ("sandman", True)):
        jobs = arrivals(random.Random(args.seed), capacity, args.load, args.days)
        results[name] = run(World(sandman, gpus, capacity, end, args.eta_every), jobs)
    results["requests"] = len(jobs)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
