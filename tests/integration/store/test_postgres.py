"""The same store code on a real PostgreSQL server (a private cluster on 127.0.0.1).

Two ``SessionService`` instances with their own engines stand for two API
processes; the schema's constraints must keep their reservations apart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from tests.fakes.runtime import FakeRuntime
from tests.integration.postgres import running_postgres

from sandman.config import Settings
from sandman.domain import SessionStatus
from sandman.errors import CapacityExhausted, QuotaExceeded, SessionConflict
from sandman.gpu.inventory import make_inventory
from sandman.gpu.types import GpuRequest
from sandman.policy.quotas import Quota, ScopeKind
from sandman.services.host_keys import HostKeys
from sandman.services.quotas import Quotas, admission_check
from sandman.services.reconciler import Reconciler
from sandman.services.requests import SessionRequest
from sandman.services.sessions import SessionService
from sandman.store.database import Database
from sandman.store.models import GpuClaim, PortClaim


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with running_postgres() as url:
        yield url


def _service(
    url: str,
    tmp_path: Path,
    worker: str,
    runtime: FakeRuntime | None = None,
    topology: str = "a100-40gb-7x1g",
) -> SessionService:
    settings = Settings(database_url=url, data_dir=tmp_path, admin_token="t", stop_grace_period=0)
    db = Database(url)
    db.migrate()
    return SessionService(
        settings, db, runtime or FakeRuntime(publishes_ports=True),
        make_inventory("simulated", topology=topology),
        HostKeys(tmp_path), deployment_id="pg-test", worker_id=worker,
    )  # fmt: skip


def test_two_processes_never_share_a_slice_or_port(postgres_url: str, tmp_path: Path) -> None:
    services = [_service(postgres_url, tmp_path, f"w{i}") for i in range(2)]

    def reserve(i: int) -> str:
        service = services[i % 2]
        request = SessionRequest(user_id=f"pg{i}")
        try:
            row, _, _ = service._reserve(
                f"00000000-0000-0000-0000-{i:012d}", request.user_id, request, 60,
                "sandman-workspace:latest", 1.0, "1g", [],
            )  # fmt: skip
        except CapacityExhausted:
            return "full"
        return str(row.gpu_uuid or row.mig_instance_uuid)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(reserve, range(30)))
    assert time.monotonic() - started < 120
    granted = [r for r in results if r != "full"]
    assert len(granted) == 7 and results.count("full") == 23
    with services[0].db.transaction() as db:
        claims = list(db.scalars(select(GpuClaim)))
        ports = list(db.scalars(select(PortClaim.port)))
    assert len({c.instance_uuid for c in claims}) == 7 == len(claims)
    assert len(set(ports)) == 7 == len(ports)

    # the partial unique index: one active session per user, across processes
    holder = f"pg{next(i for i, r in enumerate(results) if r != 'full')}"
    with pytest.raises(SessionConflict):
        request = SessionRequest(user_id=holder)
        services[1]._reserve(
            "00000000-0000-0000-0000-999999999999", holder, request, 60,
            "sandman-workspace:latest", 1.0, "1g", [],
        )  # fmt: skip


def test_concurrent_enders_in_two_processes_tear_down_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """A DELETE, the reaper and a reconciler in another process race to end one session."""
    runtime = FakeRuntime(publishes_ports=True)
    services = [_service(postgres_url, tmp_path, f"e{i}", runtime) for i in range(2)]
    teardowns: list[str] = []
    for service in services:
        service.stop_hooks.append(lambda _user, session, _why: teardowns.append(session))
    for round_ in range(5):
        user = f"ender{round_}"
        row, _, _ = services[0]._reserve(
            f"00000000-0000-0000-0001-{round_:012d}", user,
            SessionRequest(user_id=user, gpu=GpuRequest(gpu_count=0)), 60,
            "sandman-workspace:latest", 1.0, "1g", [],
        )  # fmt: skip
        barrier = threading.Barrier(16)

        def end(
            i: int,
            session_id: str = row.id,
            version: int = row.version,
            barrier: threading.Barrier = barrier,
        ) -> str:
            barrier.wait()
            status = [SessionStatus.DELETED, SessionStatus.EXPIRED, SessionStatus.LOST][i % 3]
            seen = version if status == SessionStatus.LOST else None
            ended = services[i % 2].end(session_id, status, f"by {i}", seen_version=seen, wait=True)
            return ended.status

        with ThreadPoolExecutor(max_workers=16) as pool:
            finals = set(pool.map(end, range(16)))
        assert teardowns.count(row.id) == 1, teardowns
        assert len(finals) == 1 and finals <= {"deleted", "expired", "lost"}, finals
        with services[0].db.read() as db:
            assert not list(db.scalars(select(GpuClaim).where(GpuClaim.session_id == row.id)))
            assert not list(db.scalars(select(PortClaim).where(PortClaim.session_id == row.id)))
    assert runtime.discarded and set(runtime.discarded.values()) == {1}


def test_one_reconciler_at_a_time(postgres_url: str, tmp_path: Path) -> None:
    services = [_service(postgres_url, tmp_path, f"r{i}") for i in range(2)]
    now = [datetime(2026, 12, 1, tzinfo=UTC)]
    for service in services:
        service.clock = lambda: now[0]
    first, second = (
        Reconciler(s, stale_after=30, hostname=f"host{i}") for i, s in enumerate(services)
    )
    with ThreadPoolExecutor(max_workers=8) as pool:
        holders = list(pool.map(lambda i: ((first, second)[i % 2].holds_lease(), i % 2), range(8)))
    assert len({who for held, who in holders if held}) == 1  # never both
    winner, loser = (first, second) if first.holds_lease() else (second, first)
    assert winner.holds_lease() and not loser.holds_lease()
    assert loser.run_once().skipped and not winner.run_once().skipped
    now[0] += timedelta(seconds=31)  # the winner stopped renewing: its lease runs out
    assert loser.holds_lease() and not winner.holds_lease()


def test_two_processes_never_pass_one_quota_together(postgres_url: str, tmp_path: Path) -> None:
    """A team may hold two slices; two processes reserve a 1g and a 2g (placed apart
    on one GPU, so no claim collides) for two of its users at the same moment: the
    quota row's lock makes them take turns, so one is refused."""
    # A database of its own (the other tests' sessions hold the simulated GPU's
    # slices), no ports, and users made beforehand: nothing else (a slice, a port,
    # a uid) collides, so only the quota's lock stands between the two.
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("DROP DATABASE IF EXISTS quota_race"))
        connection.execute(text("CREATE DATABASE quota_race"))
    admin.dispose()
    url = postgres_url.rsplit("/", 1)[0] + "/quota_race"
    services = [
        _service(url, tmp_path, f"q{i}", FakeRuntime(publishes_ports=False), "a100-40gb-x1")
        for i in range(2)
    ]
    for i in range(2):
        with services[0].db.transaction() as db:
            services[0].ensure_user(db, f"qr{i}")
    for service in services:
        service.admission_checks.append(admission_check(Quotas(service.db)))
    Quotas(services[0].db).put(ScopeKind.TEAM, "quota-race", Quota(max_slices=2))
    barrier = threading.Barrier(2)

    def reserve(i: int) -> str:
        request = SessionRequest(
            user_id=f"qr{i}",
            gpu=GpuRequest(mig_profile=("1g.5gb", "2g.10gb")[i]),
            team="quota-race",
        )
        barrier.wait()
        try:
            services[i]._reserve(
                f"00000000-0000-0000-0001-{i:012d}", request.user_id, request, 60,
                "sandman-workspace:latest", 1.0, "1g", [],
            )  # fmt: skip
        except QuotaExceeded as exc:
            return exc.message
        return "reserved"

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(reserve, range(2)))
    assert results.count("reserved") == 1, results
    [refusal] = [r for r in results if r != "reserved"]
    assert "team quota-race: uses" in refusal and "of 2 slices" in refusal
    for service in services:
        service.db.dispose()


def test_two_processes_creating_new_users_give_each_its_own_uid(
    postgres_url: str, tmp_path: Path
) -> None:
    """An admin's first session for a user Sandman does not know makes the user; two
    replicas doing it at the same moment must not both hand out the next uid."""
    from sandman.accounts.policy import Caller, Role
    from sandman.accounts.service import Accounts

    admin = Caller(None, Role.ADMIN, via="bootstrap")
    accounts = [
        Accounts(s.db, s, timedelta(hours=1))
        for s in (_service(postgres_url, tmp_path, f"u{i}") for i in range(2))
    ]
    users = [f"newcomer{i:02d}" for i in range(24)]
    barrier = threading.Barrier(8)

    def prepare(i: int) -> str:
        if i < 8:
            barrier.wait(timeout=30)
        accounts[i % 2].prepare_session(admin, users[i], None, None)
        return users[i]

    with ThreadPoolExecutor(max_workers=8) as pool:
        made = list(pool.map(prepare, range(len(users))))
    assert made == users
    with accounts[0].db.transaction() as db:
        rows = db.execute(
            text("SELECT user_id, uid FROM users WHERE user_id LIKE 'newcomer%'")
        ).all()
    assert len(rows) == len(users)
    assert len({uid for _, uid in rows}) == len(users)
