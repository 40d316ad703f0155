"""Sandman's API under load, each figure beside a baseline taken in the same run.

Run::

    .venv/bin/python bench/bench_load.py [--sessions 1000] [--batch 10] [--burst 100] \
        [--baseline 50] [--json load.json]

It starts its own ``sandman serve`` on 127.0.0.1 (SSH gateway mode, sessions
without a GPU at 0.1 CPU, 64m memory and 16m /dev/shm, the reconciler every
second, a private data directory in a tempdir and its own container prefix),
and goes through these phases, in this order:

raw docker (baseline)
    ``--baseline`` containers of the same image with the same hardening and
    limits, ``docker run`` ``--batch`` at a time until sshd answers, then
    ``docker rm -f`` ``--delete-concurrency`` at a time.
at rest
    p50/p99 of ``GET /healthz`` and ``GET /api/v1/sessions``, and a few
    sessions created one at a time (the baseline for the burst's creates).
burst
    ``--burst`` concurrent ``POST /sessions`` (waiting for sshd) while two
    sampler threads read ``/healthz`` and ``GET /sessions`` every 20 ms; 503s
    are retried after their ``Retry-After``. Then ``DELETE /sessions``.
mass
    ``--sessions`` sessions created ``--batch`` at a time (rate against the
    raw ``docker run`` rate), ``GET /sessions`` unpaged against ``?limit=100``,
    the server's RSS, a check that no accepted session was ended by Sandman
    (``lost``/``failed``/``expired``), then ``DELETE /sessions`` (rate against
    the raw ``docker rm -f`` rate).

The client runs on the same host as the server, so on a small machine its
own threads share the CPUs with Sandman and Docker.

It prints a table and a JSON summary (also written to ``--json``), and exits 1
when a correctness check fails. Whatever happens (Ctrl-C included), it removes
every container carrying its deployment's label, its own container prefix or
its raw baseline's label, and the network if it created it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import docker
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from support import TOKEN, Server, free_port

from bench_sessions import RawDocker, percentile
from sandman.runtime.docker.images import unmount_below

API = "/api/v1"
NETWORK = "sandman-bench-net"
RAW_LABEL = "sandman.bench.load"  # value: this run's id
DEPLOYMENT_LABEL = "sandman.deployment"
# Settings read from the environment that must not leak into the Sandman under test.
SEED_NAMES = ("DB_PATH", "WORKSPACE_ROOT", "TTL_CHECK_INTERVAL", "PIPER_CONFIG")
ENDED_BY_SANDMAN = ("lost", "failed", "expired")
SESSION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
T = TypeVar("T")
R = TypeVar("R")


# ----------------------------------------------------------------- figures
def dist(values: list[float]) -> dict[str, Any]:
    """Count, p50, p99 and max of durations in seconds, as milliseconds."""
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 0.50) * 1000, 2),
        "p99_ms": round(percentile(values, 0.99) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2),
    }


def fmt_dist(d: dict[str, Any], with_max: bool = True) -> str:
    if not d["n"]:
        return "no samples"
    text = f"p50 {d['p50_ms']:.1f} / p99 {d['p99_ms']:.1f}"
    if with_max:
        text += f" / max {d['max_ms']:.1f}"
    return f"{text} ms (n={d['n']})"


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return round(value / base, 3)


def fmt_ratio(value: float | None, suffix: str) -> str:
    return "" if value is None else f"{value:.2f}x {suffix}"


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MiB."""
    found: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mib": found.get("VmRSS", 0.0), "peak_mib": found.get("VmHWM", 0.0)}


# ----------------------------------------------------------------- the API
@dataclass
class CreateResult:
    user: str
    status: int | None  # the final answer's status; None when no answer came
    session_id: str | None
    total_s: float  # first attempt until the final answer, retries included
    busy: int  # 503s with Retry-After that were retried
    error: str | None = None


@dataclass
class Api:
    """A client per thread for one Sandman, counting every answer by route and status."""

    url: str
    stopping: threading.Event
    answers: dict[str, Counter[str]] = field(default_factory=dict)
    anomalies: list[str] = field(default_factory=list)
    _local: threading.local = field(default_factory=threading.local)
    _clients: list[httpx.Client] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self) -> httpx.Client:
        found: httpx.Client | None = getattr(self._local, "client", None)
        if found is None:
            found = httpx.Client(
                base_url=self.url,
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=httpx.Timeout(300, connect=10),
            )
            self._local.client = found
            with self._lock:
                self._clients.append(found)
        return found

    def note(self, route: str, outcome: str) -> None:
        with self._lock:
            self.answers.setdefault(route, Counter())[outcome] += 1

    def anomaly(self, text: str) -> None:
        with self._lock:
            if len(self.anomalies) < 50:
                self.anomalies.append(text)

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> tuple[float, httpx.Response | None]:
        """Seconds taken and the response, or None when no answer came (counted)."""
        route = f"{method} {SESSION_ID.sub('{id}', path)}" + (
            f"?{'&'.join(sorted(params))}" if params else ""
        )
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        began = time.perf_counter()
        try:
            response = self.client().request(method, path, params=params, json=body, **extra)
        except httpx.HTTPError as exc:
            self.note(route, type(exc).__name__)
            if not self.stopping.is_set():
                self.anomaly(f"{route}: {type(exc).__name__}: {exc}")
            return time.perf_counter() - began, None
        elapsed = time.perf_counter() - began
        self.note(route, str(response.status_code))
        if response.status_code >= 500 and not (
            response.status_code == 503 and "Retry-After" in response.headers
        ):
            self.anomaly(f"{route}: {response.status_code} {response.text[:200]}")
        return elapsed, response

    def create(self, user: str, wait: bool = True, deadline_s: float = 900) -> CreateResult:
        """``POST /sessions`` for a GPU-less session, retrying 503s after Retry-After."""
        params = None if wait else {"wait": "false"}
        began = time.perf_counter()
        busy = 0
        while True:
            _, response = self.request(
                "POST", f"{API}/sessions", params, {"user_id": user, "gpu_count": 0}
            )
            total = time.perf_counter() - began
            if response is None:
                return CreateResult(user, None, None, total, busy, "no answer")
            retry_after = response.headers.get("Retry-After")
            if (
                response.status_code == 503
                and retry_after is not None
                and total < deadline_s
                and not self.stopping.is_set()
            ):
                busy += 1
                self.stopping.wait(float(retry_after))
                continue
            expected = 201 if wait else 202
            if response.status_code != expected:
                return CreateResult(
                    user, response.status_code, None, total, busy, response.text[:200]
                )
            session = response.json()
            want = "running" if wait else "starting"
            if session.get("status") != want:
                self.anomaly(f"POST {user}: {expected} with status {session.get('status')!r}")
            if not wait and not response.headers.get("Location", "").endswith(
                session["session_id"]
            ):
                self.anomaly(f"POST {user}: 202 without a Location naming the session")
            return CreateResult(user, response.status_code, session["session_id"], total, busy)

    def count(self, status: str) -> int:
        """How many sessions have ``status``, from one ``?limit=1`` page's X-Total-Count."""
        _, response = self.request(
            "GET", f"{API}/sessions", {"status": status, "limit": 1}, timeout=60
        )
        if response is None or response.status_code != 200:
            raise RuntimeError(f"could not count {status} sessions")
        return int(response.headers["X-Total-Count"])

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()


def _sample(
    url: str,
    path: str,
    params: dict[str, Any] | None,
    interval: float,
    stop: Any,
    results: Any,
) -> None:
    """The sampler's process: GET ``path`` every ``interval`` until ``stop`` is set."""
    latencies: list[float] = []
    failures = 0
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as client:
        next_at = time.perf_counter()
        while not stop.is_set():
            began = time.perf_counter()
            try:
                ok = client.get(path, params=params).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - began)
            else:
                failures += 1
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                stop.wait(delay)
            else:
                next_at = time.perf_counter()
    results.send((latencies, failures))


class Sampler:
    """Reads one endpoint every ``interval`` seconds while in the ``with``, from a
    process of its own: a thread beside the benchmark's own request threads would
    wait for their interpreter lock and count that wait as the server's latency."""

    def __init__(
        self, api: Api, path: str, params: dict[str, Any] | None = None, interval: float = 0.02
    ) -> None:
        self.api = api
        self.path = path
        self.params = params
        self.interval = interval
        self.latencies: list[float] = []
        self.failures = 0
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_sample,
            args=(api.url, path, params, interval, self._stop, send),
            daemon=True,
        )

    def __enter__(self) -> Sampler:
        self._process.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._receive.poll(60):
            self.latencies, self.failures = self._receive.recv()
        self._process.join(10)
        route = f"GET {self.path}" + (f"?{'&'.join(sorted(self.params))}" if self.params else "")
        for _latency in self.latencies:
            self.api.note(route, "200")
        for _failure in range(self.failures):
            self.api.note(route, "failed")

    def figures(self) -> dict[str, Any]:
        return {**dist(self.latencies), "failures": self.failures}


def run_all(fn: Callable[[T], R], items: Iterable[T], workers: int, wait: bool = False) -> list[R]:
    """``fn`` over ``items``, ``workers`` at a time; on an interruption queued work is
    dropped, and with ``wait`` work in flight is waited for."""
    pool = ThreadPoolExecutor(max(1, workers))
    try:
        return list(pool.map(fn, items))
    finally:
        pool.shutdown(wait=wait, cancel_futures=True)


def sequential(api: Api, path: str, n: int, params: dict[str, Any] | None = None) -> list[float]:
    found = []
    for _ in range(n):
        elapsed, response = api.request("GET", path, params)
        if response is not None and response.status_code == 200:
            found.append(elapsed)
    return found


# ----------------------------------------------------------------- the run
@dataclass
class Run:
    args: argparse.Namespace
    root: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    server: Server | None = None
    api: Api | None = None
    deployment: str | None = None
    network_existed: bool = True
    stopping: threading.Event = field(default_factory=threading.Event)
    rows: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    accepted: dict[str, str] = field(default_factory=dict)  # session id -> phase
    failures: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"sml-{self.run_id}"

    def row(self, phase: str, measure: str, figure: str, base: str = "", vs: str = "") -> None:
        self.rows.append((phase, measure, figure, base, vs))

    def memory(self) -> dict[str, float]:
        assert self.server is not None and self.server.process is not None
        return proc_memory(self.server.process.pid)

    # ------------------------------------------------------------ start
    def start(self) -> Api:
        client = docker.from_env(version="auto")
        self.network_existed = any(n.name == NETWORK for n in client.networks.list(names=[NETWORK]))
        data_dir = self.root / "sandman"
        data_dir.mkdir()
        port = free_port()
        start_port, _, end_port = self.args.ssh_ports.partition("-")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("SANDMAN_") and k not in SEED_NAMES
        }
        env.update(
            {
                "SANDMAN_DATA_DIR": str(data_dir),
                "SANDMAN_ADMIN_TOKEN": TOKEN,
                "SANDMAN_HOST": "127.0.0.1",
                "SANDMAN_PORT": str(port),
                "SANDMAN_CONTAINER_PREFIX": self.prefix,
                "SANDMAN_NETWORK_NAME": NETWORK,
                "SANDMAN_SSH_MODE": "gateway",
                "SANDMAN_SSH_LISTEN": f"127.0.0.1:{free_port()}",
                "SANDMAN_SSH_BIND_ADDRESS": "127.0.0.1",
                "SANDMAN_SSH_PORT_START": start_port,
                "SANDMAN_SSH_PORT_END": end_port,
                "SANDMAN_CPUS": str(self.args.cpus),
                "SANDMAN_MEMORY": self.args.memory,
                "SANDMAN_SHM_SIZE": self.args.shm_size,
                "SANDMAN_RECONCILE_INTERVAL": self.args.reconcile_interval,
                "SANDMAN_CREATE_WORKERS": str(self.args.create_workers),
                "SANDMAN_DELETE_CONCURRENCY": str(self.args.delete_concurrency),
                "SANDMAN_STOP_GRACE_PERIOD": str(self.args.stop_grace),
                "SANDMAN_LOG_LEVEL": "WARNING",
            }
        )
        self.server = Server(data_dir, env, f"http://127.0.0.1:{port}")
        self.server.start()
        self.deployment = self.server.deployment()
        self.api = Api(self.server.url, self.stopping)
        self.summary["config"] = {
            "sessions": self.args.sessions,
            "batch": self.args.batch,
            "burst": self.args.burst,
            "baseline": self.args.baseline,
            "create_workers": self.args.create_workers,
            "delete_concurrency": self.args.delete_concurrency,
            "mass_wait": not self.args.no_wait,
            "cpus": self.args.cpus,
            "memory": self.args.memory,
            "shm_size": self.args.shm_size,
            "stop_grace": self.args.stop_grace,
            "host_cpus": os.cpu_count(),
            "deployment": self.deployment,
        }
        return self.api

    # ------------------------------------------------------------ phases
    def at_rest(self, api: Api) -> None:
        n = self.args.rest_samples
        health = dist(sequential(api, "/healthz", n))
        listing = dist(sequential(api, f"{API}/sessions", n))
        creates: list[float] = []
        deletes: list[float] = []
        for i in range(self.args.rest_creates):
            result = api.create(f"rest{i:02d}")
            if result.session_id is None:
                self.failures.append(f"at rest: create {result.user}: {result.error}")
                continue
            self.accepted[result.session_id] = "rest"
            creates.append(result.total_s)
            elapsed, response = api.request("DELETE", f"{API}/sessions/{result.session_id}")
            if response is not None and response.status_code == 200:
                deletes.append(elapsed)
        memory = self.memory()
        self.summary["at_rest"] = {
            "healthz": health,
            "list_sessions": listing,
            "create_one_at_a_time": dist(creates),
            "delete_one": dist(deletes),
            "server_memory": memory,
        }
        self.row("at rest", "GET /healthz", fmt_dist(health))
        self.row("at rest", "GET /sessions (empty)", fmt_dist(listing))
        self.row("at rest", "POST /sessions, one at a time", fmt_dist(dist(creates)))
        self.row("at rest", "DELETE /sessions/{id}, one at a time", fmt_dist(dist(deletes)))
        self.row("at rest", "server RSS", f"{memory['rss_mib']:.0f} MiB")

    def burst(self, api: Api) -> None:
        n = self.args.burst
        rest = self.summary["at_rest"]
        with (
            Sampler(api, "/healthz") as health,
            Sampler(api, f"{API}/sessions") as listing,
        ):
            began = time.perf_counter()
            results = run_all(lambda i: api.create(f"burst{i:03d}"), range(n), n)
            wall = time.perf_counter() - began
        created = self.record(results, "burst")
        statuses = Counter(str(r.status) for r in results)
        busy = sum(r.busy for r in results)
        create_lat = dist([r.total_s for r in created])
        memory = self.memory()
        deleted = self.delete_all(api, "burst")
        self.summary["burst"] = {
            "concurrent": n,
            "healthz": health.figures(),
            "list_sessions": listing.figures(),
            "create": create_lat,
            "final_status": dict(statuses),
            "retried_503": busy,
            "wall_s": round(wall, 2),
            "sessions_per_s": round(len(created) / wall, 2),
            "server_memory": memory,
            "delete_all": deleted,
        }
        for name, sampler, base in (
            ("GET /healthz", health, rest["healthz"]),
            ("GET /sessions", listing, rest["list_sessions"]),
        ):
            fig = sampler.figures()
            verdict = "" if fig["p99_ms"] is None else f"p99 < 100 ms: {fig['p99_ms'] < 100}"
            if sampler.failures:
                verdict += f"; {sampler.failures} failed"
            self.row(f"burst {n}", f"{name} every 20 ms", fmt_dist(fig), fmt_dist(base), verdict)
        self.row(
            f"burst {n}",
            "POST /sessions (incl. retries)",
            fmt_dist(create_lat),
            fmt_dist(rest["create_one_at_a_time"], False),
            fmt_ratio(ratio(create_lat["p50_ms"], rest["create_one_at_a_time"]["p50_ms"]), "p50"),
        )
        self.row(
            f"burst {n}",
            "final answers",
            ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())),
            "",
            f"503s retried: {busy}",
        )
        self.row(
            f"burst {n}",
            "all created",
            f"{wall:.1f} s, {len(created) / wall:.2f} sessions/s",
        )
        self.row(
            f"burst {n}",
            "server RSS",
            f"{memory['rss_mib']:.0f} MiB",
            f"{rest['server_memory']['rss_mib']:.0f} MiB at rest",
        )
        self.delete_rows(f"burst {n}", deleted)

    def record(self, results: list[CreateResult], phase: str) -> list[CreateResult]:
        """Note the sessions Sandman confirmed, and every create it refused."""
        created = []
        for r in results:
            if r.session_id is None:
                self.failures.append(f"{phase}: create {r.user}: {r.status} {r.error}")
            else:
                self.accepted[r.session_id] = phase
                created.append(r)
        return created

    def delete_all(self, api: Api, phase: str) -> dict[str, Any]:
        expected = api.count("active")
        with Sampler(api, "/healthz") as health:
            elapsed, response = api.request("DELETE", f"{API}/sessions", timeout=3600)
        ended = 0
        if response is not None and response.status_code == 200:
            ended = len(response.json()["ended"])
        else:
            self.failures.append(f"{phase}: DELETE /sessions answered {response}")
        left = self.containers(f"{DEPLOYMENT_LABEL}={self.deployment}")
        if ended != expected:
            self.failures.append(f"{phase}: DELETE /sessions ended {ended} of {expected}")
        if left:
            self.failures.append(f"{phase}: {len(left)} containers left after DELETE /sessions")
        return {
            "expected": expected,
            "ended": ended,
            "seconds": round(elapsed, 2),
            "sessions_per_s": round(ended / elapsed, 2) if elapsed else None,
            "containers_left": len(left),
            "healthz_during": health.figures(),
        }

    def delete_rows(self, phase: str, deleted: dict[str, Any]) -> None:
        raw = self.summary["raw_docker"]
        self.row(
            phase,
            "DELETE /sessions",
            f"{deleted['ended']} in {deleted['seconds']:.1f} s, "
            f"{deleted['sessions_per_s'] or 0:.2f} sessions/s",
            f"raw docker rm -f {raw['rm_per_s']:.2f}/s",
            fmt_ratio(ratio(deleted["sessions_per_s"], raw["rm_per_s"]), "raw"),
        )
        self.row(
            phase,
            "GET /healthz during DELETE /sessions",
            fmt_dist(deleted["healthz_during"]),
            fmt_dist(self.summary["at_rest"]["healthz"]),
        )

    def raw_baseline(self) -> None:
        n, batch = self.args.baseline, self.args.batch
        raw = RawDocker(self.root)
        raw.kwargs["labels"] = {RAW_LABEL: self.run_id}
        # the limits Sandman gives its sessions, so both start the same container
        raw.kwargs.update(
            nano_cpus=int(self.args.cpus * 1e9),
            mem_limit=self.args.memory,
            shm_size=self.args.shm_size,
            pids_limit=4096,
        )

        began = time.perf_counter()
        started = run_all(lambda _: raw.start(), range(n), batch, wait=True)
        start_wall = time.perf_counter() - began
        began = time.perf_counter()
        run_all(raw.remove, [cid for _, cid in started], self.args.delete_concurrency, wait=True)
        rm_wall = time.perf_counter() - began
        self.summary["raw_docker"] = {
            "containers": n,
            "run_concurrency": batch,
            "rm_concurrency": self.args.delete_concurrency,
            "run_until_sshd": dist([t for t, _ in started]),
            "run_wall_s": round(start_wall, 2),
            "run_per_s": round(n / start_wall, 2),
            "rm_wall_s": round(rm_wall, 2),
            "rm_per_s": round(n / rm_wall, 2),
        }
        self.row(
            "raw docker",
            f"docker run until sshd, {n} x{batch}",
            f"{start_wall:.1f} s, {n / start_wall:.2f} containers/s",
            fmt_dist(dist([t for t, _ in started]), False),
        )
        self.row(
            "raw docker",
            f"docker rm -f, {n} x{self.args.delete_concurrency}",
            f"{rm_wall:.1f} s, {n / rm_wall:.2f} containers/s",
        )

    def mass(self, api: Api) -> None:
        n, batch, wait = self.args.sessions, self.args.batch, not self.args.no_wait
        rest = self.summary["at_rest"]
        raw = self.summary["raw_docker"]
        phase = f"mass {n}"
        with (
            Sampler(api, "/healthz") as health,
            Sampler(api, f"{API}/sessions", {"limit": 100}) as listing,
        ):
            began = time.perf_counter()
            results = run_all(lambda i: api.create(f"mass{i:04d}", wait), range(n), batch)
            answered = time.perf_counter() - began
            if not wait:
                deadline = time.monotonic() + 600
                while api.count("starting") and time.monotonic() < deadline:
                    time.sleep(0.2)
            wall = time.perf_counter() - began
        created = self.record(results, "mass")
        running = api.count("running")
        rate = running / wall
        statuses = Counter(str(r.status) for r in results)

        # listing: unpaged against one page of 100
        unpaged: list[float] = []
        paged: list[float] = []
        sizes: dict[str, int] = {}
        for _ in range(self.args.list_samples):
            for key, params, into in (
                ("unpaged", None, unpaged),
                ("limit=100", {"limit": 100}, paged),
            ):
                elapsed, response = api.request("GET", f"{API}/sessions", params, timeout=120)
                if response is None or response.status_code != 200:
                    continue
                into.append(elapsed)
                sizes[key] = len(response.content)
                total, shown = int(response.headers["X-Total-Count"]), len(response.json())
                if total != running or shown != (min(100, total) if params else total):
                    self.failures.append(
                        f"mass: GET /sessions {key}: X-Total-Count {total}, {shown} shown, "
                        f"{running} running"
                    )
        memory = self.memory()
        check = self.check_sessions(api)
        deleted = self.delete_all(api, "mass")
        memory_after = self.memory()
        self.summary["mass"] = {
            "sessions": n,
            "concurrency": batch,
            "wait": wait,
            "final_status": dict(statuses),
            "retried_503": sum(r.busy for r in results),
            "create": dist([r.total_s for r in created]),
            "answered_s": round(answered, 2),
            "wall_s": round(wall, 2),
            "running": running,
            "sessions_per_s": round(rate, 2),
            "vs_raw_run": ratio(rate, raw["run_per_s"]),
            "healthz_during_create": health.figures(),
            "list_limit100_during_create": listing.figures(),
            "list_unpaged": dist(unpaged),
            "list_limit100": dist(paged),
            "list_bytes": sizes,
            "server_memory": memory,
            "server_memory_after_delete": memory_after,
            "check": check,
            "delete_all": deleted,
            "delete_vs_raw_rm": ratio(deleted["sessions_per_s"], raw["rm_per_s"]),
        }
        mode = "waiting for sshd" if wait else "wait=false, until running"
        self.row(
            phase,
            f"POST /sessions x{batch}, {mode}",
            f"{running} running in {wall:.1f} s, {rate:.2f} sessions/s",
            f"raw docker run {raw['run_per_s']:.2f}/s",
            fmt_ratio(ratio(rate, raw["run_per_s"]), "raw"),
        )
        self.row(
            phase,
            "final answers",
            ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())),
            "",
            f"503s retried: {self.summary['mass']['retried_503']}",
        )
        self.row(
            phase,
            f"POST /sessions latency (until {201 if wait else 202})",
            fmt_dist(dist([r.total_s for r in created])),
            fmt_dist(rest["create_one_at_a_time"], False),
        )
        for name, sampler, base in (
            ("GET /healthz during creates", health, rest["healthz"]),
            ("GET /sessions?limit=100 during creates", listing, rest["list_sessions"]),
        ):
            fig = sampler.figures()
            verdict = "" if fig["p99_ms"] is None else f"p99 < 100 ms: {fig['p99_ms'] < 100}"
            self.row(phase, name, fmt_dist(fig), fmt_dist(base), verdict)
        self.row(
            phase,
            f"GET /sessions unpaged ({sizes.get('unpaged', 0) / 1024:.0f} KiB)",
            fmt_dist(dist(unpaged), False),
            f"?limit=100 ({sizes.get('limit=100', 0) / 1024:.0f} KiB): "
            + fmt_dist(dist(paged), False),
            fmt_ratio(ratio(dist(unpaged)["p50_ms"], dist(paged)["p50_ms"]), "p50"),
        )
        self.row(
            phase,
            "server RSS (peak VmHWM)",
            f"{memory['rss_mib']:.0f} MiB (peak {memory['peak_mib']:.0f})",
            f"{rest['server_memory']['rss_mib']:.0f} MiB at rest",
            fmt_ratio(ratio(memory["rss_mib"], rest["server_memory"]["rss_mib"]), "at rest"),
        )
        self.row(
            phase,
            "accepted sessions ended by Sandman",
            f"{check['ended_by_sandman']} of {check['accepted']} "
            f"({check['mass_running']} mass sessions running)",
            "",
            "ok" if check["ok"] else "FAILED",
        )
        self.delete_rows(phase, deleted)
        self.row(
            phase,
            "server RSS after DELETE",
            f"{memory_after['rss_mib']:.0f} MiB (peak {memory_after['peak_mib']:.0f})",
        )

    def check_sessions(self, api: Api) -> dict[str, Any]:
        """Every accepted session, read back through the paged ``?status=all``: the mass
        ones still running, the others deleted, none ended by Sandman itself."""
        found: dict[str, dict[str, Any]] = {}
        offset, total, pages = 0, 0, 0
        while True:
            params = {"status": "all", "limit": self.args.page, "offset": offset}
            _, response = api.request("GET", f"{API}/sessions", params)
            if response is None or response.status_code != 200:
                raise RuntimeError("could not page through GET /sessions?status=all")
            page = response.json()
            total = int(response.headers["X-Total-Count"])
            pages += 1
            for s in page:
                found[s["session_id"]] = s
            offset += len(page)
            if not page or offset >= total:
                break
        by_status: Counter[str] = Counter()
        ended_by_sandman: list[str] = []
        unexpected: list[str] = []
        for session_id, phase in self.accepted.items():
            s = found.get(session_id)
            status = s["status"] if s else "missing"
            by_status[status] += 1
            if status in ENDED_BY_SANDMAN:
                ended_by_sandman.append(f"{session_id} {status}: {s and s['end_reason']}")
            elif status != ("running" if phase == "mass" else "deleted"):
                unexpected.append(f"{session_id} ({phase}) is {status}")
        paging_ok = len(found) == total == offset
        ok = not ended_by_sandman and not unexpected and paging_ok
        if not ok:
            self.failures.extend(ended_by_sandman[:10] + unexpected[:10])
            if not paging_ok:
                self.failures.append(
                    f"paging: {len(found)} distinct of X-Total-Count {total} over {pages} pages"
                )
        return {
            "accepted": len(self.accepted),
            "by_status": dict(by_status),
            "ended_by_sandman": len(ended_by_sandman),
            "unexpected": len(unexpected),
            "mass_running": sum(
                1
                for i, p in self.accepted.items()
                if p == "mass" and i in found and found[i]["status"] == "running"
            ),
            "paging_ok": paging_ok,
            "pages": pages,
            "page_size": self.args.page,
            "ok": ok,
        }

    # ------------------------------------------------------------ cleanup
    def containers(self, label: str) -> list[str]:
        client = docker.from_env(version="auto")
        return [c["Id"] for c in client.api.containers(all=True, filters={"label": label})]

    def ours(self) -> list[str]:
        """Ids of every container this run started: by label, and by name prefix."""
        client = docker.from_env(version="auto")
        ids: set[str] = set(self.containers(f"{RAW_LABEL}={self.run_id}"))
        if self.deployment:
            ids.update(self.containers(f"{DEPLOYMENT_LABEL}={self.deployment}"))
        for c in client.api.containers(all=True, filters={"name": f"{self.prefix}-"}):
            if any(name.lstrip("/").startswith(f"{self.prefix}-") for name in c["Names"]):
                ids.add(c["Id"])
        return sorted(ids)

    def cleanup(self) -> None:
        self.stopping.set()
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.deployment = self.deployment or self.server.deployment()
            log = self.server.data_dir / "serve.log"
            try:
                self.server.stop()
            finally:
                self.summary["server_log"] = self.server_log()
                if self.args.log and log.exists():
                    shutil.copyfile(log, self.args.log)
        client = docker.from_env(version="auto")

        def remove(container_id: str) -> None:
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(container_id, force=True)

        removed = 0
        for _ in range(5):  # a create that was in flight may still land: look again
            ids = self.ours()
            if not ids:
                break
            run_all(remove, ids, 16, wait=True)
            removed += len(ids)
            time.sleep(1)
        if removed:
            print(f"cleanup: removed {removed} containers", file=sys.stderr)
        if not self.network_existed:
            for network in client.networks.list(names=[NETWORK]):
                network.reload()
                if network.name == NETWORK and not network.attrs.get("Containers"):
                    network.remove()
        if self.api is not None:
            self.api.close()

    # ------------------------------------------------------------ report
    def server_log(self) -> dict[str, int]:
        """Warnings and errors of the serve log, numbers and ids folded together."""
        if self.server is None:
            return {}
        path = self.server.data_dir / "serve.log"
        found: Counter[str] = Counter()
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if re.search(r"WARNING|ERROR|Traceback|CRITICAL", line):
                    folded = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27,}|\b\d+(\.\d+)?\b", "#", line)
                    found[folded[:160]] += 1
        return dict(found.most_common(15))

    def report(self) -> None:
        headers = ("phase", "measure", "figure", "baseline (same run)", "vs baseline")
        widths = [max(len(r[i]) for r in [headers, *self.rows]) for i in range(5)]
        line = "  ".join("-" * w for w in widths)
        print(line)
        for r in [headers, *self.rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
            if r is headers:
                print(line)
        print(line)
        if self.api is None:
            return
        print("answers by route:")
        for route, outcomes in sorted(self.api.answers.items()):
            print(f"  {route:<44} " + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())))
        self.summary["answers"] = {k: dict(v) for k, v in self.api.answers.items()}
        self.summary["anomalies"] = self.api.anomalies
        self.summary["failures"] = self.failures
        for title, items in (
            ("anomalies (5xx, no answer, wrong body)", self.api.anomalies),
            ("correctness failures", self.failures),
            (
                "serve.log warnings/errors",
                [f"{v} x {k}" for k, v in self.summary.get("server_log", {}).items()],
            ),
        ):
            if items:
                print(f"{title}:")
                for item in items[:20]:
                    print(f"  {item}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000, help="sessions in the mass phase")
    parser.add_argument("--batch", type=int, default=10, help="creates in flight at once")
    parser.add_argument("--burst", type=int, default=100, help="concurrent creates in the burst")
    parser.add_argument("--baseline", type=int, default=50, help="raw docker run containers")
    parser.add_argument("--json", type=Path, help="also write the JSON summary here")
    parser.add_argument("--log", type=Path, help="copy the server's log here")
    parser.add_argument("--create-workers", type=int, default=8)
    parser.add_argument("--delete-concurrency", type=int, default=16)
    parser.add_argument(
        "--no-wait", action="store_true", help="mass phase: POST ?wait=false, then poll"
    )
    parser.add_argument("--rest-samples", type=int, default=200)
    parser.add_argument("--rest-creates", type=int, default=5)
    parser.add_argument("--list-samples", type=int, default=20)
    parser.add_argument(
        "--page", type=int, default=100, help="page size for the ?status=all check (<= 1000)"
    )
    parser.add_argument("--cpus", type=float, default=0.1)
    parser.add_argument("--memory", default="64m")
    parser.add_argument("--shm-size", default="16m")
    parser.add_argument("--stop-grace", default="0", help="SIGTERM-to-SIGKILL grace on delete")
    parser.add_argument(
        "--reconcile-interval",
        default="1s",
        help="how often the reconciler runs (1s exercises it under load; 30s is the default)",
    )
    parser.add_argument("--ssh-ports", default="30000-32000", help="session port range")
    args = parser.parse_args()
    if min(args.sessions, args.batch, args.burst, args.baseline) < 1:
        parser.error("--sessions, --batch, --burst and --baseline must be at least 1")
    if not 1 <= args.page <= 1000:
        parser.error("--page must be from 1 to 1000")
    low, _, high = args.ssh_ports.partition("-")
    if int(high) - int(low) + 1 < max(args.sessions, args.burst, args.rest_creates):
        parser.error("--ssh-ports must hold a port for every session at once")

    def interrupt(signum: int, _: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    root = Path(tempfile.mkdtemp(prefix="sandman-bench-load-"))
    run = Run(args, root)
    completed = False
    try:
        api = run.start()
        print(f"sandman at {api.url}, deployment {run.deployment}", file=sys.stderr)
        for name, phase in (
            ("raw docker", run.raw_baseline),
            ("at rest", lambda: run.at_rest(api)),
            ("burst", lambda: run.burst(api)),
            ("mass", lambda: run.mass(api)),
        ):
            print(f"phase: {name}", file=sys.stderr)
            phase()
        completed = True
    except Exception:
        traceback.print_exc()
        run.failures.append("the run stopped early: see the traceback")
    finally:
        try:
            run.cleanup()
        finally:
            unmount_below(root)  # workspace images: Sandman leaves them mounted when it stops
            shutil.rmtree(root, ignore_errors=True)
    run.report()
    text = json.dumps(run.summary, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if completed and not run.failures else 1


if __name__ == "__main__":
    sys.exit(main())
