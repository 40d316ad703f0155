"""The portal's pages at 64 GPUs and 500 sessions: median and p90 per page, in ms.

Run::

    .venv/bin/python bench/bench_portal.py [--gpus 64] [--sessions 500] [--repeat 30]

The machine is the ``h100-80gb-x8`` preset scaled to ``--gpus`` H100s with MIG
on demand (a topology file written for the run); the sessions are started through
the session service over the fake runtime, one user each, 1g.10gb (seven to a
GPU): those that do not fit wait in the queue. The pages are requested through
the whole app in this process (a ``TestClient``) by an admin logged in with the
portal's token form: cookie check, the services' reads, Jinja2, the headers. The
goal is each page's HTML in under 100 ms.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import fake_core

from sandman.accounts.directory import UserChanges
from sandman.accounts.policy import Role, Scope
from sandman.api.app import create_app
from sandman.gpu.types import GpuRequest
from sandman.services.requests import SessionRequest

PAGES = [
    "/ui/",
    "/ui/gpus",
    "/ui/fragments/gpus",
    "/ui/sessions",
    "/ui/fragments/sessions",
    "/ui/queue",
    "/ui/people",
    "/ui/environments",
    "/ui/costs",
    "/ui/audit",
    "/ui/usage",
]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHHSOcakhHEsJrMWYR0gZy/jY4HgkL3tLCF/gZoIE3rX b@x"


def topology(path: Path, gpus: int) -> Path:
    path.write_text(
        "gpus:\n" + "".join("  - {model: H100-SXM5-80GB, mig: dynamic}\n" for _ in range(gpus))
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--gpus", type=int, default=64)
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        core = fake_core(
            root / "data",
            FakeRuntime(),
            gpu_topology=str(topology(root / "gpus.yaml", args.gpus)),
        )
        for team in range(20):
            core.accounts.teams.create_team(f"team{team:02d}", None)
        began = time.perf_counter()
        for n in range(args.sessions):
            user = f"user{n:03d}"
            core.accounts.directory.create(user, UserChanges(default_team=f"team{n % 20:02d}"))
            core.sessions.create(
                SessionRequest(
                    user_id=user,
                    gpu=GpuRequest(mig_profile="1g.10gb"),
                    ssh_public_keys=[KEY],
                    team=f"team{n % 20:02d}",
                    queue=True,
                )
            )
        counts = core.sessions.counts_by_status()
        print(f"set-up: {args.sessions} sessions {counts} in {time.perf_counter() - began:.1f} s")
        for etas in (True, False):  # the queue's view, fresh: reads and the dispatcher
            took = []
            for _ in range(3):
                core.queue.forget()
                start = time.perf_counter()
                core.queue.view(etas=etas)
                took.append((time.perf_counter() - start) * 1000)
            what = "with ETAs (reads)" if etas else "without ETAs (the dispatcher)"
            print(f"the queue's view {what}: {statistics.median(took):.0f} ms")
        core.accounts.directory.create("ops", UserChanges(role=Role.ADMIN))
        _, secret = core.credentials.create_token("ops", "bench", frozenset(Scope), None, "ops")
        with TestClient(create_app(core, run_background=False)) as client:
            form = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/ui/login").text)
            assert form is not None
            client.post("/ui/login", data={"csrf_token": form.group(1), "token": secret})
            print(f"{'page':28} {'median ms':>10} {'p90 ms':>10} {'KiB':>8}")
            for page in PAGES:
                times = []
                size = 0
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    response = client.get(page)
                    times.append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200, (page, response.status_code)
                    size = len(response.content)
                times.sort()
                p90 = times[min(len(times) - 1, int(0.9 * len(times)))]
                median = statistics.median(times)
                print(f"{page:28} {median:10.1f} {p90:10.1f} {size / 1024:8.0f}")
        core.stop()


if __name__ == "__main__":
    main()
