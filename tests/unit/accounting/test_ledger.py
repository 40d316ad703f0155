"""The ledger in the database: one start and one end per grant, whatever is retried or
restarted; the back-fill of sessions from before the ledger; capacity snapshots."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from sandman.accounting.rates import Grant, build_rates, hourly_price
from sandman.accounting.reports import GroupBy, Period, RowKind
from sandman.accounting.service import GRANT_COLUMNS, UsageLedger, grant_key
from sandman.accounts.policy import Visibility
from sandman.gpu.inventory import make_inventory
from sandman.store.database import MIGRATIONS_DIR, Database
from sandman.store.models import LedgerDay, LedgerEvent, User
from sandman.store.models import Session as SessionRow

T0 = datetime(2026, 3, 1, tzinfo=UTC)
A100 = "NVIDIA A100-SXM4-80GB"
RATES = build_rates()
USERS = itertools.count()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'test.db'}")
    database.migrate()
    yield database
    database.dispose()


def add_session(
    db: Database,
    session_id: str,
    user: str,
    profile: str | None,
    team: str = "vision",
    project: str | None = "p1",
    priority: str = "normal",
) -> None:
    with db.transaction() as tx:
        if tx.get(User, user) is None:
            tx.add(User(user_id=user, uid=30000 + next(USERS), gid=30000, ssh_public_keys=[]))
            tx.flush()
        tx.add(
            SessionRow(
                id=session_id, user_id=user, status="running", image="img",
                container_name=session_id, cpus=1, memory="1g", ttl_minutes=60,
                created_at=T0, expires_at=T0 + timedelta(days=9),
                labels={}, authorized_keys=[], gpu_parent_uuid="GPU-1", gpu_name=A100,
                mig_profile=profile, team=team, project=project, priority=priority,
            )
        )  # fmt: skip


def grant(ledger: UsageLedger, session_id: str) -> None:
    with ledger.db.transaction() as tx:
        ledger.on_grant(tx, tx.get_one(SessionRow, session_id), ledger.clock())


def release(ledger: UsageLedger, session_id: str) -> None:
    with ledger.db.transaction() as tx:
        row = tx.get_one(SessionRow, session_id)
        row.status = "deleted"
        ledger.on_release(tx, row, ledger.clock())


def test_a_grant_and_its_release_are_written_once(db: Database) -> None:
    clock = Clock()
    ledger = UsageLedger(db, RATES, clock=clock)
    add_session(db, "once", "once-user", "3g.40gb")
    grant(ledger, "once")
    grant(ledger, "once")  # a retried hook adds nothing
    clock.now += timedelta(hours=2, microseconds=999)
    release(ledger, "once")
    release(ledger, "once")
    with db.read() as tx:
        events = tx.scalars(select(LedgerEvent).where(LedgerEvent.session_id == "once")).all()
    assert sorted((e.kind, e.at) for e in events) == [
        ("end", T0 + timedelta(hours=2)),  # to the second
        ("start", T0),
    ]
    result = ledger.report(
        Visibility(False, "once-user"), GroupBy.PROJECT, Period.DAY, date(2026, 3, 1)
    )
    usage = [r for r in result.rows if r.kind is RowKind.USAGE]
    assert [(r.group, r.gpu_hours) for r in usage] == [("p1", pytest.approx(6 / 7))]


def test_a_session_without_gpus_is_not_in_the_ledger(db: Database) -> None:
    ledger = UsageLedger(db, RATES, clock=Clock())
    add_session(db, "cpu-only", "cpu-user", None)
    with db.transaction() as tx:
        row = tx.get_one(SessionRow, "cpu-only")
        row.gpu_parent_uuid = None
        ledger.on_grant(tx, row, T0)
        ledger.on_release(tx, row, T0)
    with db.read() as tx:
        assert tx.scalar(select(func.count()).where(LedgerEvent.session_id == "cpu-only")) == 0


# (operation, session index, seconds the clock moves on first)
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["grant", "release", "restart"]), st.integers(0, 3), st.integers(0, 20_000)
    ),
    max_size=25,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=STEPS)
def test_no_interval_is_counted_twice_or_lost_across_a_restart(
    db: Database, steps: list[tuple[str, int, int]]
) -> None:
    user = f"u{next(USERS)}"
    clock = Clock()
    clock.now = T0 + timedelta(days=1)
    ledger = UsageLedger(db, RATES, clock=clock)
    held: dict[int, tuple[datetime, datetime | None]] = {}
    for op, index, seconds in steps:
        clock.now += timedelta(seconds=seconds)
        session_id = f"{user}-{index}"
        if op == "restart":  # a new process: a new engine and a new ledger on the same file
            ledger = UsageLedger(Database(db.url), RATES, clock=clock)
        elif op == "grant" and index not in held:
            add_session(db, session_id, session_id, "1g.10gb", team=user)
            grant(ledger, session_id)
            held[index] = (clock.now, None)
        elif op == "release" and index in held and held[index][1] is None:
            release(ledger, session_id)
            held[index] = (held[index][0], clock.now)
    clock.now += timedelta(seconds=77)  # the running ones count up to now
    result = ledger.report(
        Visibility(False, teams=frozenset({user})),
        GroupBy.USER,
        Period.DAY,
        date(2026, 3, 1),
        date(2026, 3, 9),
    )
    price = hourly_price(RATES, Grant(A100, "1g.10gb", None, 1))
    expected = sum(((end or clock.now) - start).total_seconds() for start, end in held.values())
    assert sum(r.cost for r in result.rows) == pytest.approx(price * expected / 3600)


def day_rows(db: Database, user: str) -> list[tuple[date, int]]:
    with db.read() as tx:
        rows = tx.execute(
            select(LedgerDay.day, LedgerDay.seconds)
            .where(LedgerDay.user_id == user)
            .order_by(LedgerDay.day)
        )
        return [(day, seconds) for day, seconds in rows]


def test_a_release_retried_adds_its_days_once(db: Database) -> None:
    clock = Clock()
    clock.now = T0 + timedelta(days=3, hours=22)
    ledger = UsageLedger(db, RATES, clock=clock)
    add_session(db, "retried", "retried-user", "1g.10gb")
    grant(ledger, "retried")
    clock.now += timedelta(hours=3, seconds=5)
    release(ledger, "retried")
    release(ledger, "retried")  # the same process retries
    release(UsageLedger(Database(db.url), RATES, clock=clock), "retried")  # after a restart
    assert day_rows(db, "retried-user") == [(date(2026, 3, 4), 7200), (date(2026, 3, 5), 3605)]
    with db.read() as tx:
        start = tx.scalars(select(LedgerEvent).where(LedgerEvent.session_id == "retried")).first()
        assert start is not None
        keys = set(tx.scalars(select(LedgerDay.key).where(LedgerDay.user_id == "retried-user")))
    assert keys == {grant_key({name: getattr(start, name) for name in GRANT_COLUMNS})}


def test_grants_of_the_same_key_share_their_day_rows(db: Database) -> None:
    clock = Clock()
    clock.now = T0 + timedelta(days=5)
    ledger = UsageLedger(db, RATES, clock=clock)
    for session_id in ("same-1", "same-2"):
        add_session(db, session_id, "same-user", "2g.20gb")
        grant(ledger, session_id)
        clock.now += timedelta(hours=1)
        release(ledger, session_id)
    assert day_rows(db, "same-user") == [(date(2026, 3, 6), 7200)]


# (user, grant, team, project, priority, start second, seconds held or None: running)
LEDGERS = st.lists(
    st.tuples(
        st.sampled_from(["ann", "ben"]),
        st.sampled_from([None, "1g.10gb", "3g.40gb"]),
        st.sampled_from(["t1", "t2"]),
        st.sampled_from(["p1", None]),
        st.sampled_from(["low", "normal"]),
        st.integers(0, 40 * 86400),
        st.one_of(st.none(), st.integers(0, 20 * 86400)),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    grants=LEDGERS,
    group_by=st.sampled_from(list(GroupBy)),
    period=st.sampled_from(list(Period)),
    window=st.tuples(st.integers(-3, 45), st.integers(1, 50)),
    now=st.integers(0, 70 * 86400),
)
def test_the_rollup_gives_the_same_report_as_the_intervals(
    db: Database,
    grants: list[tuple[str, str | None, str, str | None, str, int, int | None]],
    group_by: GroupBy,
    period: Period,
    window: tuple[int, int],
    now: int,
) -> None:
    case = f"r{next(USERS)}"
    clock = Clock()
    ledger = UsageLedger(db, RATES, clock=clock)
    events: list[tuple[int, str, str]] = []  # (second, grant | release, session)
    for i, (user, profile, team, project, priority, begin, held) in enumerate(grants):
        session_id = f"{case}-{i}"
        # One active session per user: a user per session (teams and projects are shared).
        add_session(db, session_id, f"{session_id}{user}", profile, f"{case}{team}", project,
                    priority)  # fmt: skip
        events.append((begin, "grant", session_id))
        if held is not None and begin + held <= now:
            events.append((begin + held, "release", session_id))
    for second, what, session_id in sorted(events):
        clock.now = T0 + timedelta(seconds=second)
        (grant if what == "grant" else release)(ledger, session_id)
    clock.now = T0 + timedelta(seconds=now)
    visibility = Visibility(False, teams=frozenset({f"{case}t1", f"{case}t2"}))
    start = date(2026, 3, 1) + timedelta(days=window[0])
    how = (visibility, group_by, period, start, start + timedelta(days=window[1]))
    by_day, by_interval = ledger.report(*how), ledger.report_from_intervals(*how)
    assert (by_day.start, by_day.end) == (by_interval.start, by_interval.end)
    assert [(r.period, r.kind, r.group) for r in by_day.rows] == [
        (r.period, r.kind, r.group) for r in by_interval.rows
    ]
    for one, other in zip(by_day.rows, by_interval.rows, strict=True):
        assert one.cost == pytest.approx(other.cost, abs=1e-6)
        assert one.gpu_hours == pytest.approx(other.gpu_hours, abs=1e-6)


def test_the_capacity_is_recorded_when_it_changes(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'cap.db'}")
    db.migrate()
    clock = Clock()
    inventory = make_inventory("simulated", topology="mixed", state_path=tmp_path / "gpus.json")
    ledger = UsageLedger(db, RATES, inventory, clock=clock)
    assert ledger.record_capacity()
    clock.now += timedelta(hours=1)
    assert not ledger.record_capacity()  # the same GPUs
    clock.now += timedelta(hours=1)
    assert ledger.record_capacity(inventory.devices()[:1])
    assert [c.gpus for c in ledger.capacity()] == [
        {"A100-80GB": 1, "RTX-4090": 1},
        {"A100-80GB": 1},
    ]
    inventory.close()
    db.dispose()


SESSION = (
    "INSERT INTO sessions (id, user_id, status, image, container_name, cpus, memory, team, "
    "project, labels, authorized_keys, ttl_minutes, created_at, started_at, ended_at, "
    "expires_at, gpu_fallback, version, gpu_parent_uuid, gpu_name, mig_profile, priority) "
    "VALUES (:id, :id, :status, 'img', :id, 1, '1g', 'vision', NULL, '{}', '[]', 60, "
    "'2026-02-01 10:00:00.000000', :started, :ended, '2026-02-09 00:00:00.000000', 0, 0, "
    ":gpus, :name, :profile, 'low')"
)


def test_the_migration_back_fills_the_sessions_before_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    db = Database(url)
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0014")
        for values in (
            (
                "ended",
                "deleted",
                "2026-02-01 10:00:05.000000",
                "2026-02-01 12:00:05.500000",
                "G1,G2",
                None,
            ),
            ("running", "running", None, None, "G3", "3g.40gb"),
            ("queued", "queued", None, None, None, None),
            ("cpu", "expired", None, "2026-02-01 11:00:00.000000", None, None),
        ):
            session_id, status, started, ended, gpus, profile = values
            connection.execute(
                text(
                    "INSERT INTO users (user_id, uid, gid, ssh_public_keys, created_at) "
                    "VALUES (:id, :uid, 1, '[]', CURRENT_TIMESTAMP)"
                ),
                {"id": session_id, "uid": len(session_id) * 100 + ord(session_id[0])},
            )
            connection.execute(
                text(SESSION),
                {"id": session_id, "status": status, "started": started, "ended": ended,
                 "gpus": gpus, "name": A100, "profile": profile},
            )  # fmt: skip
    db.migrate()
    with db.read() as tx:
        events = {(e.session_id, e.kind): e for e in tx.scalars(select(LedgerEvent))}
    assert set(events) == {("ended", "start"), ("ended", "end"), ("running", "start")}
    assert events[("ended", "start")].at == datetime(2026, 2, 1, 10, 0, 5, tzinfo=UTC)
    assert events[("ended", "end")].at == datetime(2026, 2, 1, 12, 0, 5, tzinfo=UTC)
    assert events[("ended", "start")].gpus == 2
    assert events[("running", "start")].at == datetime(2026, 2, 1, 10, tzinfo=UTC)
    assert events[("running", "start")].priority == "low"
    with db.read() as tx:
        days = tx.scalars(select(LedgerDay)).all()
    assert [(d.day, d.week, d.month, d.user_id, d.gpus, d.seconds) for d in days] == [
        (date(2026, 2, 1), date(2026, 1, 26), date(2026, 2, 1), "ended", 2, 7200)
    ]
    start = events[("ended", "start")]
    assert days[0].key == grant_key({name: getattr(start, name) for name in GRANT_COLUMNS})
    db.dispose()
