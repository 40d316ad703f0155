"""What authorization costs: requests per second of ``GET /api/v1/sessions`` with
the bootstrap admin token, a user's personal token and a browser login cookie, each
against the admin token in the same run (goal: within 10%).

Run::

    .venv/bin/python bench/bench_auth.py [--seconds 5] [--rounds 3] [--sessions 20]

It serves Sandman with uvicorn on 127.0.0.1 (a free port, a private data directory
in a tempdir) over a runtime that starts nothing: the figure is the API's own
work. One user owns every session (one running, the rest ended), and the request
asks for ``status=all``, so all three credentials read the same rows: the only
difference is how the caller is found and what it may see. Modes are measured in
interleaved rounds so drift on a shared machine hits them alike; each round is
``--clients`` threads with one keep-alive connection each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
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
from sandman.domain import SessionStatus  # noqa: E402
from sandman.services.requests import SessionRequest  # noqa: E402

ADMIN = "bench-admin-token"


def measure(
    url: str, headers: dict[str, str], cookies: dict[str, str], seconds: float, clients: int
) -> float:
    """Requests per second over ``seconds`` with ``clients`` threads."""
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def work(index: int) -> None:
        with httpx.Client(headers=headers, cookies=cookies, timeout=30) as client:
            while time.monotonic() < stop:
                response = client.get(url, params={"status": "all"})
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
                counts[index] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.monotonic() - began)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sandman-bench-auth-") as tmp:
        runtime = FakeRuntime()
        settings = Settings(
            data_dir=Path(tmp),
            admin_token=ADMIN,
            ssh_mode="direct",
            default_mig_profile=None,
            stop_grace_period=0,
            log_level="WARNING",
        )
        core = Sandman(settings, runtime=runtime, announce=lambda _: None, with_gateway=False)
        core.sessions.probe = runtime.probe
        from sandman.accounts.directory import UserChanges
        from sandman.accounts.policy import Scope

        core.accounts.directory.create("bench", UserChanges())
        for n in range(args.sessions):
            created = core.sessions.create(SessionRequest(user_id="bench"))
            if n < args.sessions - 1:
                core.sessions.end(created.session.id, SessionStatus.DELETED, "bench")
        _, token = core.credentials.create_token("bench", "bench", frozenset(Scope), None, "bench")
        login = core.credentials.create_login("bench")
        port = free_port()
        server = serve(core, port)
        url = f"http://127.0.0.1:{port}/api/v1/sessions"
        modes: dict[str, tuple[dict[str, str], dict[str, str]]] = {
            "admin token": ({"Authorization": f"Bearer {ADMIN}"}, {}),
            "user token": ({"Authorization": f"Bearer {token}"}, {}),
            "cookie": ({}, {"sandman_session": login.secret}),
        }
        rates: dict[str, list[float]] = {mode: [] for mode in modes}
        try:
            for headers, cookies in modes.values():  # warm up
                measure(url, headers, cookies, 1.0, args.clients)
            for _ in range(args.rounds):
                for mode, (headers, cookies) in modes.items():
                    rates[mode].append(measure(url, headers, cookies, args.seconds, args.clients))
        finally:
            server.should_exit = True
            time.sleep(0.5)
            core.stop()
    base = statistics.median(rates["admin token"])
    summary: dict[str, Any] = {"sessions_listed": args.sessions, "clients": args.clients}
    print(f"{'credential':<12} {'req/s (median)':>15} {'vs admin token':>15}")
    for mode, values in rates.items():
        median = statistics.median(values)
        summary[mode] = {
            "rps": round(median, 1),
            "ratio": round(median / base, 3),
            "rounds": values,
        }
        print(f"{mode:<12} {median:>15.1f} {median / base:>14.2f}x")
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
