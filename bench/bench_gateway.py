"""Gateway throughput and latency against OpenSSH straight to the same sshd.

Runs standalone (``.venv/bin/python bench/bench_gateway.py``): it starts its
own upstream sshd on 127.0.0.1 and a gateway in this process, then runs the
same OpenSSH client commands through the gateway and directly, both preferring
``aes128-gcm@openssh.com``, and prints the ratios. Each transfer runs
``--repeat`` times each way, direct and gateway interleaved, and the medians
are reported. The gateway's CPU time per test is this process's CPU time (the
clients, sshd and the port-forward peers are child processes).

Options: ``--quick`` (smaller transfers), ``--stock`` (leave asyncssh untuned),
``--compare-tuning`` (the bulk transfers with stock asyncssh, then with the
gateway's tuning, in one run, side by side),
``--repeat N`` (default 5), ``--profile FILE`` (py-spy profile of the gateway
during the cat transfers: a flame graph, or collapsed stacks when FILE ends in
``.txt``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration" / "gateway"))

from gateway_harness import (  # noqa: E402
    RUN_USER,
    Client,
    GatewayThread,
    MemoryRouteSource,
    Sshd,
    free_port,
    keygen,
    make_route,
    wait_port,
)

CIPHER = "aes128-gcm@openssh.com"
MiB = 1 << 20


@dataclass
class Result:
    name: str
    unit: str
    direct: float
    gateway: float
    gateway_cpu_s: float
    higher_is_better: bool

    def ratio(self) -> float:
        if self.higher_is_better:
            return self.gateway / self.direct if self.direct else 0.0
        return self.direct / self.gateway if self.gateway else 0.0


class Bench:
    def __init__(self, root: Path, *, tune: bool) -> None:
        self.root = root
        self.source = MemoryRouteSource()
        self.gateway = GatewayThread(self.source, root, tune_asyncssh=tune)
        self.sshd = Sshd(
            root / "upstream", [self.gateway.server.identity_public_key()], max_startups="300"
        )
        self.key = root / "id_bench"
        self.source.keys["bench"] = [keygen(self.key, "bench")]
        self.source.routes["bench"] = make_route("bench", self.sshd)
        self.gateway.start()
        self.via = Client(
            root, self.gateway.port, self.gateway.server.host_public_key(), cipher=CIPHER
        )
        self.direct = Client(root, self.sshd.port, self.sshd.host_public_key, cipher=CIPHER)
        self.direct_key = root / "gateway_identity_key"

    def ssh(self, through: bool, *args: str) -> list[str]:
        if through:
            return self.via.ssh("bench", self.key, *args)
        return self.direct.ssh(RUN_USER, self.direct_key, *args)

    def scp(self, through: bool, *args: str) -> list[str]:
        if through:
            return self.via.scp(self.key, *args)
        return self.direct.scp(self.direct_key, *args)

    def sftp(self, through: bool, *args: str) -> list[str]:
        if through:
            return self.via.sftp(self.key, *args)
        return self.direct.sftp(self.direct_key, *args)

    def user(self, through: bool) -> str:
        return "bench" if through else RUN_USER

    def close(self) -> None:
        try:
            self.gateway.stop()
        finally:
            self.sshd.stop()


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    cpu0, t0 = time.process_time(), time.perf_counter()
    fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    print(f"  {getattr(fn, '__name__', 'step')}: {wall:.2f}s wall, {cpu:.2f}s cpu", flush=True)
    return wall, cpu


def check(cmd: list[str] | str, **kwargs: object) -> None:
    r = subprocess.run(cmd, capture_output=True, timeout=600, **kwargs)  # type: ignore[call-overload]
    if r.returncode != 0:
        raise RuntimeError(f"{cmd!r} failed ({r.returncode}): {r.stderr[-500:]!r}")


def q(args: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in args)


def bench_latency(b: Bench, n: int) -> Result:
    samples: dict[bool, list[float]] = {True: [], False: []}
    cpu = 0.0
    for _ in range(n):
        for through in (False, True):
            wall, c = timed(lambda t=through: check(b.ssh(t, "true")))
            samples[through].append(wall * 1000)
            cpu += c if through else 0.0
    return Result(
        "connect + true (median ms)",
        "ms",
        statistics.median(samples[False]),
        statistics.median(samples[True]),
        cpu,
        higher_is_better=False,
    )


def measure(name: str, size: int, run: Callable[[bool], None], repeat: int) -> Result:
    """Run ``run(through)`` ``repeat`` times each way, interleaved; median rates."""
    rates: dict[bool, list[float]] = {False: [], True: []}
    cpus: list[float] = []
    for _ in range(repeat):
        for through in (False, True):
            wall, c = timed(functools.partial(run, through))
            rates[through].append(size / MiB / wall)
            if through:
                cpus.append(c)
    return Result(
        name,
        "MiB/s",
        statistics.median(rates[False]),
        statistics.median(rates[True]),
        statistics.median(cpus),
        True,
    )


def bench_cat(b: Bench, size: int, repeat: int, *, upload: bool = True) -> list[Result]:
    def download(through: bool) -> None:
        check(q(b.ssh(through, f"head -c {size} /dev/zero")) + " > /dev/null", shell=True)

    def upload_(through: bool) -> None:
        check(f"head -c {size} /dev/zero | {q(b.ssh(through, 'cat > /dev/null'))}", shell=True)

    results = [measure(f"download {size // MiB} MiB via cat", size, download, repeat)]
    if upload:
        results.append(measure(f"upload {size // MiB} MiB via cat", size, upload_, repeat))
    return results


def bench_default_ciphers(b: Bench, size: int, repeat: int) -> Result:
    """A download as users' clients make it: OpenSSH's own cipher preference.

    Straight to sshd that is chacha20-poly1305; through the gateway, which
    offers only AES-GCM by default, it is AES-GCM.
    """
    ciphers = b.via.cipher, b.direct.cipher
    b.via.cipher = b.direct.cipher = None
    try:
        [download] = bench_cat(b, size, repeat, upload=False)
    finally:
        b.via.cipher, b.direct.cipher = ciphers
    download.name = f"download {size // MiB} MiB, default ciphers"
    return download


def bench_scp_sftp(b: Bench, size: int, repeat: int) -> list[Result]:
    """scp (its default, SFTP-based protocol) and sftp, each way, file to file."""
    src = b.root / "files_src.bin"
    with src.open("wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
    dst = b.root / "files_dst.bin"

    def transfer(tool: str, upload: bool) -> Callable[[bool], None]:
        def run(through: bool) -> None:
            remote = f"{b.user(through)}@127.0.0.1"
            if tool == "scp":
                pair = [str(src), f"{remote}:{dst}"] if upload else [f"{remote}:{src}", str(dst)]
                check(b.scp(through, *pair))
            else:
                batch = b.root / "batch"
                batch.write_text(f"put {src} {dst}\n" if upload else f"get {src} {dst}\n")
                check(b.sftp(through, "-b", str(batch), remote))
            if dst.stat().st_size != size:
                raise RuntimeError(f"{tool} copied {dst.stat().st_size} of {size} bytes")
            dst.unlink()

        return run

    out = [
        measure(f"{tool} {way} {size // MiB} MiB", size, transfer(tool, way == "upload"), repeat)
        for tool in ("scp", "sftp")
        for way in ("upload", "download")
    ]
    src.unlink()
    return out


# The port-forward peers run in their own processes, so that they compete with
# the gateway (a thread of this process) for CPU only, as real ones would, and
# not for this process's interpreter lock.
_STREAM_SERVER = """
import socket, sys
port, size = int(sys.argv[1]), int(sys.argv[2])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen()
chunk = bytes(256 * 1024)
while True:
    conn, _ = srv.accept()
    with conn:
        left = size
        try:
            while left > 0:
                conn.sendall(chunk[: min(left, len(chunk))])
                left -= len(chunk)
        except OSError:
            pass  # a probe connection (wait_port) hung up
"""

_STREAM_FETCH = """
import socket, sys
port, size = int(sys.argv[1]), int(sys.argv[2])
got = 0
with socket.create_connection(("127.0.0.1", port)) as s:
    while data := s.recv(1 << 20):
        got += len(data)
if got != size:
    sys.exit(f"forward got {got} of {size} bytes")
"""


def bench_forward(b: Bench, size: int, repeat: int) -> Result:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", _STREAM_SERVER, str(port), str(size)])
    tunnels: dict[bool, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        wait_port(port)
        for through in (False, True):
            local = free_port()
            tunnel = subprocess.Popen(
                b.ssh(through, "-N", "-L", f"{local}:127.0.0.1:{port}"), stderr=subprocess.DEVNULL
            )
            tunnels[through] = (tunnel, local)
            wait_port(local)

        def fetch(through: bool) -> None:
            check([sys.executable, "-c", _STREAM_FETCH, str(tunnels[through][1]), str(size)])

        return measure(f"ssh -L stream {size // MiB} MiB", size, fetch, repeat)
    finally:
        for tunnel, _ in tunnels.values():
            tunnel.terminate()
            tunnel.wait(10)
        server.kill()
        server.wait(10)


def bench_concurrent(b: Bench, n: int) -> Result:
    walls, cpu = {}, 0.0
    for through in (False, True):

        def burst(t: bool = through) -> None:
            with concurrent.futures.ThreadPoolExecutor(n) as pool:
                codes = list(
                    pool.map(
                        lambda i: (
                            subprocess.run(
                                b.ssh(t, f"echo {i}"), capture_output=True, timeout=300
                            ).returncode
                        ),
                        range(n),
                    )
                )
            failed = sum(1 for c in codes if c != 0)
            if failed:
                raise RuntimeError(f"{failed} of {n} concurrent connections failed")

        wall, c = timed(burst)
        walls[through] = wall
        cpu = c if through else cpu
    return Result(f"{n} concurrent connections (s)", "s", walls[False], walls[True], cpu, False)


def transfers(tune: bool, bulk: int, files: int, repeat: int) -> list[Result]:
    """The bulk transfers through a fresh gateway and sshd, tuned or stock."""
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp:
        b = Bench(Path(tmp), tune=tune)
        try:
            results = bench_cat(b, bulk, repeat)
            results.extend(bench_scp_sftp(b, files, repeat))
        finally:
            b.close()
    return results


def compare_tuning(bulk: int, files: int, repeat: int) -> None:
    """Stock first: tuning replaces asyncssh functions process-wide, so it comes second."""
    from sandman.gateway import asyncssh_tuning

    stock = transfers(False, bulk, files, repeat)
    assert not asyncssh_tuning.is_applied()
    tuned = transfers(True, bulk, files, repeat)
    print(f"asyncssh tuned in the second run: {asyncssh_tuning.is_applied()}; cipher {CIPHER}")
    print(
        f"\n{'test':30} {'direct':>8} {'stock':>8} {'tuned':>8} {'stock/dir':>9} "
        f"{'tuned/dir':>9} {'stock cpu':>9} {'tuned cpu':>9}"
    )
    for s, t in zip(stock, tuned, strict=True):
        direct = statistics.mean([s.direct, t.direct])
        print(
            f"{s.name:30} {direct:8.1f} {s.gateway:8.1f} {t.gateway:8.1f} "
            f"{s.gateway / direct:9.2f} {t.gateway / direct:9.2f} "
            f"{s.gateway_cpu_s:9.2f} {t.gateway_cpu_s:9.2f}  ({s.unit}; cpu s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--stock", action="store_true", help="do not tune asyncssh")
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs of each transfer each way (median reported)"
    )
    parser.add_argument("--profile", type=Path, help="write a py-spy profile here (.svg or .txt)")
    parser.add_argument(
        "--compare-tuning",
        action="store_true",
        help="bulk transfers with stock asyncssh, then tuned, in one run",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bulk = 256 * MiB if args.quick else 1024 * MiB
    files = 64 * MiB if args.quick else 256 * MiB
    if args.compare_tuning:
        compare_tuning(bulk, files, args.repeat)
        return
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp:
        b = Bench(Path(tmp), tune=not args.stock)
        spy = None
        try:
            from sandman.gateway import asyncssh_tuning

            print(
                f"asyncssh tuned: {asyncssh_tuning.is_applied()}; cipher {CIPHER}; "
                f"{os.cpu_count()} cpus"
            )
            rss_before = peak_rss_mib()
            results = [bench_latency(b, 20)]
            if args.profile:
                spy = subprocess.Popen(
                    [
                        "py-spy",
                        "record",
                        "-p",
                        str(os.getpid()),
                        "-o",
                        str(args.profile),
                        "--nonblocking",
                        "-r",
                        "200",
                        "--format",
                        "raw" if args.profile.suffix == ".txt" else "flamegraph",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1)
            results.extend(bench_cat(b, bulk, args.repeat))
            if spy is not None:
                spy.send_signal(2)
                spy.wait(60)
                spy = None
            results.append(bench_default_ciphers(b, bulk, args.repeat))
            results.extend(bench_scp_sftp(b, files, args.repeat))
            results.append(bench_forward(b, bulk // 2, args.repeat))
            results.append(bench_concurrent(b, 100))
            rss_after = peak_rss_mib()
        finally:
            if spy is not None:
                spy.kill()
                spy.wait()
            b.close()
    print(f"\n{'test':38} {'direct':>10} {'gateway':>10} {'ratio':>7} {'gw cpu s':>9}")
    for r in results:
        print(
            f"{r.name:38} {r.direct:10.1f} {r.gateway:10.1f} {r.ratio():7.2f} "
            f"{r.gateway_cpu_s:9.2f}  ({r.unit})"
        )
    print(
        f"\npeak RSS of this process (the gateway and its relays): {rss_before:.0f} MiB "
        f"before the transfers, {rss_after:.0f} MiB after"
    )
    lat = results[0]
    print(f"\nadded latency: {lat.gateway - lat.direct:.1f} ms (goal <= 50 ms)")
    tput = [r.ratio() for r in results if r.higher_is_better]
    print(f"throughput ratio: min {min(tput):.2f}, mean {statistics.mean(tput):.2f} (goal >= 0.70)")


if __name__ == "__main__":
    main()
