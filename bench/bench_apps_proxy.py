"""The apps proxy against a direct connection to the same app, in one run.

Runs standalone (``.venv/bin/python bench/bench_apps_proxy.py``): it starts the
unit tests' fake app (``tests/unit/web/fake_app.py``) in a process of its own and
the apps origin in another (``sandman``'s ``create_apps_app`` over a fake
runtime), then measures from this process:

- **throughput**: a 1 GiB download, direct and through the proxy, interleaved,
  ``--repeat`` times each (goal: the proxy at 0.8x direct or better);
- **added latency**: small GETs (``ping``) over one kept-alive connection, direct
  and through the proxy; the median and p90 of each and their difference.

The proxy's CPU time (user and system, per GiB relayed) and peak RSS are read
from its process. Options: ``--size`` (MiB, default 1024), ``--repeat`` (default
3), ``--requests`` (default 2000), ``--loop uvloop`` (the proxy on uvloop, where
installed), ``--pin`` (the proxy on a core of its own, this process and the app
on the others: on a 2-core machine they otherwise compete with it; on a machine
others use too, their load lands on the proxy's core and the figure drops).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
FAKE_APP = ROOT / "tests" / "unit" / "web" / "fake_app.py"
KEY = bytes(range(32))
MIB = 1 << 20

# The apps origin, in a process of its own: a fake runtime, one user with a token
# and one running session, every app pointed at the fake app's port.
PROXY = """
import asyncio, socket, sys
sys.path.insert(0, {root!r})
import uvicorn
from tests.fakes.runtime import FakeRuntime
from sandman.accounts.directory import UserChanges
from sandman.accounts.policy import Scope
from sandman.config import Settings
from sandman.core import Sandman
from sandman.services.requests import SessionRequest
from sandman.web.apps_app import create_apps_app

upstream = int(sys.argv[1])
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY
sock.bind(("127.0.0.1", 0))
port = sock.getsockname()[1]
runtime = FakeRuntime()
core = Sandman(
    Settings(data_dir={data!r}, admin_token="bench", ssh_mode="direct", start_timeout=5,
             default_mig_profile=None, apps_url=f"http://127.0.0.1:{{port}}"),
    runtime=runtime, announce=lambda _: None, with_gateway=False,
)
core.sessions.probe = runtime.probe
core.accounts.directory.create("alice", UserChanges())
_, token = core.credentials.create_token("alice", "bench", frozenset(Scope), None, "bench")
session = core.sessions.create(SessionRequest("alice")).session
app = create_apps_app(core, address=lambda s, a: ("127.0.0.1", upstream))
print(port, token, session.id, flush=True)
server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
if sys.argv[2] == "uvloop":
    import uvloop
    uvloop.run(server.serve(sockets=[sock]))
else:
    asyncio.run(server.serve(sockets=[sock]))
"""


def start(argv: list[str], cpus: set[int] | None) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if cpus is not None:
        os.sched_setaffinity(process.pid, cpus)
    assert process.stdout is not None
    return process, process.stdout.readline().split()


def download(client: httpx.Client, url: str, size: int) -> float:
    began = time.perf_counter()
    got = 0
    with client.stream("GET", f"{url}bytes?size={size}") as answer:
        answer.raise_for_status()
        for chunk in answer.iter_raw():
            got += len(chunk)
    assert got == size, got
    return size / (time.perf_counter() - began)


def latencies(client: httpx.Client, url: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        answer = client.get(f"{url}ping")
        times.append(time.perf_counter() - began)
        assert answer.status_code == 200, answer.text
    return times


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def cpu_seconds(pid: int) -> tuple[float, float]:
    """A process's user and system CPU time so far."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="MiB per download")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="asyncio", help="the proxy's event loop"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the proxy on a core of its own (the last), this process and the app on the others",
    )
    args = parser.parse_args()
    size = args.size * MIB
    cpus = sorted(os.sched_getaffinity(0))
    proxy_cpus = others = None
    if args.pin:
        if len(cpus) < 2:
            parser.error("--pin needs two cores or more")
        proxy_cpus, others = {cpus[-1]}, set(cpus[:-1])
        os.sched_setaffinity(0, others)
    with tempfile.TemporaryDirectory() as data:
        Path(data, "apps_key").write_text(KEY.hex() + "\n")
        app, (app_port,) = start([sys.executable, str(FAKE_APP), "--key", KEY.hex()], others)
        script = PROXY.format(root=str(ROOT), data=data)
        proxy, (proxy_port, token, session_id) = start(
            [sys.executable, "-c", script, app_port, args.loop], proxy_cpus
        )
        try:
            path = f"/s/{session_id}/lab/"
            direct = f"http://127.0.0.1:{app_port}{path}"
            proxied = f"http://127.0.0.1:{proxy_port}{path}"
            from sandman.environments.apps import apps_secret

            headers_direct = {"Authorization": f"token {apps_secret(KEY, session_id)}"}
            headers_proxy = {"Authorization": f"Bearer {token}"}
            timeout = httpx.Timeout(120)
            with (
                httpx.Client(headers=headers_direct, timeout=timeout) as to_app,
                httpx.Client(headers=headers_proxy, timeout=timeout) as to_proxy,
            ):
                latencies(to_proxy, proxied, 20)  # starts the app, warms both up
                latencies(to_app, direct, 20)
                rates: dict[str, list[float]] = {"direct": [], "proxy": []}
                user = system = 0.0
                for _ in range(args.repeat):
                    rates["direct"].append(download(to_app, direct, size))
                    before = cpu_seconds(proxy.pid)
                    rates["proxy"].append(download(to_proxy, proxied, size))
                    after = cpu_seconds(proxy.pid)
                    user += after[0] - before[0]
                    system += after[1] - before[1]
                small = {
                    "direct": latencies(to_app, direct, args.requests),
                    "proxy": latencies(to_proxy, proxied, args.requests),
                }
            rss = peak_rss(proxy.pid)
        finally:
            for process in (proxy, app):
                process.terminate()
                process.wait(timeout=10)
    direct_rate = statistics.median(rates["direct"])
    proxy_rate = statistics.median(rates["proxy"])
    placement = f"proxy pinned to core {cpus[-1]}, the rest on {others}" if args.pin else "shared"
    print(
        f"download of {args.size} MiB, median of {args.repeat}"
        f" (cores: {len(cpus)}, {placement}; proxy loop: {args.loop}):"
    )
    print(f"  direct  {direct_rate / MIB:8.0f} MiB/s")
    print(f"  proxy   {proxy_rate / MIB:8.0f} MiB/s   ratio {proxy_rate / direct_rate:.2f}x")
    print(f"small requests ({args.requests} each, one kept-alive connection):")
    for name, values in small.items():
        print(
            f"  {name:7} median {statistics.median(values) * 1000:6.2f} ms"
            f"   p90 {p90(values) * 1000:6.2f} ms"
        )
    added_median = statistics.median(small["proxy"]) - statistics.median(small["direct"])
    added_p90 = p90(small["proxy"]) - p90(small["direct"])
    print(f"  added   median {added_median * 1000:6.2f} ms   p90 {added_p90 * 1000:6.2f} ms")
    gib = args.repeat * size / (1 << 30)
    print(
        f"proxy CPU: {(user + system) / gib:.2f} s per GiB"
        f" (user {user / gib:.2f}, system {system / gib:.2f}); peak RSS: {rss / MIB:.0f} MiB"
    )


if __name__ == "__main__":
    main()
