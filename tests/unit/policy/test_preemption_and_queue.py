"""Protection, the choice of victims, the queue's order and its ETA simulation,
with properties: no protected session is ever chosen; the queue never starts a
request that does not fit; an ETA is never earlier than the slices can free."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from tests.unit.gpu.gpu_helpers import device

from sandman.gpu.types import Claim, GpuRequest
from sandman.policy.preemption import Running, choose_victims, protected, reach
from sandman.policy.queue import (
    Holding,
    UsageEvent,
    Waiting,
    decayed_usage,
    order,
    planner_for,
    simulate,
    startable,
)
from sandman.policy.quotas import Priority

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
PRIORITIES = list(Priority)


def run(sid: str, team: str, priority: Priority, age_min: int, slices: float) -> Running:
    return Running(sid, f"u-{sid}", team, priority, NOW - timedelta(minutes=age_min), slices)


def test_the_guarantee_protects_by_priority_then_age() -> None:
    sessions = [
        run("old-low", "ml", Priority.LOW, 100, 3),
        run("new-high", "ml", Priority.HIGH, 1, 3),
        run("mid-normal", "ml", Priority.NORMAL, 50, 3),
        run("cv", "cv", Priority.LOW, 10, 7),
    ]
    assert protected(sessions, {"ml": 6}) == {"new-high", "mid-normal"}


def test_victims_are_the_least_disruptive_set() -> None:
    sessions = [
        run("a", "ml", Priority.NORMAL, 30, 2),
        run("b", "ml", Priority.LOW, 20, 2),
        run("c", "ml", Priority.LOW, 10, 4),
        run("d", "ml", Priority.HIGH, 5, 7),
    ]

    def frees(need: float):  # type: ignore[no-untyped-def]
        return lambda ids: sum(s.slices for s in sessions if s.session_id in ids) >= need

    one = choose_victims(sessions, {}, Priority.NORMAL, frees(4))
    assert [v.session_id for v in one or []] == ["c"]  # one session, low priority
    two = choose_victims(sessions, {}, Priority.NORMAL, frees(6))
    assert sorted(v.session_id for v in two or []) == ["b", "c"]  # low before normal
    assert choose_victims(sessions, {}, Priority.LOW, frees(7)) is None  # d is high
    assert choose_victims(sessions, {"ml": 20}, Priority.HIGH, frees(1)) is None


running_sessions = st.lists(
    st.builds(
        run,
        sid=st.uuids().map(str),
        team=st.sampled_from(["ml", "cv", "nlp"]),
        priority=st.sampled_from(PRIORITIES),
        age_min=st.integers(0, 1000),
        slices=st.sampled_from([1.0, 2.0, 3.0, 4.0, 7.0]),
    ),
    max_size=10,
    unique_by=lambda r: r.session_id,
)


@given(
    sessions=running_sessions,
    guarantees=st.dictionaries(st.sampled_from(["ml", "cv", "nlp"]), st.integers(0, 14)),
    priority=st.sampled_from(PRIORITIES),
    need=st.integers(1, 20),
)
def test_no_protected_or_higher_session_is_ever_chosen(
    sessions: list[Running], guarantees: dict[str, int], priority: Priority, need: int
) -> None:
    safe = protected(sessions, {k: float(v) for k, v in guarantees.items()})
    victims = choose_victims(
        sessions,
        {k: float(v) for k, v in guarantees.items()},
        priority,
        lambda ids: sum(s.slices for s in sessions if s.session_id in ids) >= need,
    )
    for victim in victims or []:
        assert victim.session_id not in safe
        assert victim.priority.rank <= priority.rank
    if victims is not None:
        assert sum(v.slices for v in victims) >= need


def wait(sid: str, priority: Priority, age: int, profile: str, team: str = "ml") -> Waiting:
    return Waiting(
        sid, f"u-{sid}", team, priority, NOW - timedelta(minutes=age), GpuRequest(profile), 60
    )


def test_order_is_priority_then_fair_share_then_age() -> None:
    usage = decayed_usage(
        [
            UsageEvent("ml", 70.0, NOW - timedelta(days=7)),  # one half-life ago: 35
            UsageEvent("cv", 10.0, NOW),
        ],
        timedelta(days=7),
        NOW,
    )
    assert round(usage["ml"]) == 35
    queue = order(
        [
            wait("ml-old", Priority.NORMAL, 60, "1g.5gb", "ml"),
            wait("cv-new", Priority.NORMAL, 1, "1g.5gb", "cv"),
            wait("ml-high", Priority.HIGH, 0, "1g.5gb", "ml"),
        ],
        usage,
    )
    assert [w.session_id for w in queue] == ["ml-high", "cv-new", "ml-old"]


def full_gpu() -> tuple[list, list[Holding]]:  # type: ignore[type-arg]
    """One A100 (dynamic MIG) held by seven 1g sessions ending 10, 20, ... 70 min on."""
    gpu = device(0, "A100-40GB")
    holdings = [
        Holding(f"s{n}", NOW + timedelta(minutes=10 * (n + 1)), (Claim(gpu.uuid, n, 1, "1g.5gb"),))
        for n in range(7)
    ]
    return [gpu], holdings


def test_an_eta_waits_for_the_slices_it_needs() -> None:
    devices, holdings = full_gpu()
    planner = planner_for(devices, "1g.5gb")
    queue = [wait("one", Priority.NORMAL, 5, "1g.5gb"), wait("big", Priority.NORMAL, 1, "3g.20gb")]
    eta = simulate(queue, holdings, planner, NOW)
    assert eta["one"] == NOW + timedelta(minutes=10)  # the first 1g to end
    # 3g needs slices 0-3 or 4-7 free: s0..s3 end by 40 min, but "one" took s0's place
    # at 10 min and holds it an hour; 4-7 (s4, s5, s6, and slot 7 never used) at 70.
    assert eta["big"] == NOW + timedelta(minutes=70)


def test_a_request_nothing_will_free_has_no_eta() -> None:
    devices, _ = full_gpu()
    endless = [
        Holding(
            "forever", NOW + timedelta(days=365 * 100), (Claim(devices[0].uuid, 0, 8, "7g.40gb"),)
        )
    ]
    eta = simulate(
        [wait("x", Priority.NORMAL, 0, "1g.5gb")], endless, planner_for(devices, None), NOW
    )
    assert eta["x"] == NOW + timedelta(days=365 * 100)
    assert simulate([wait("y", Priority.NORMAL, 0, "1g.5gb")], [], planner_for([], None), NOW) == {
        "y": None
    }


@given(
    ends=st.lists(st.integers(1, 500), min_size=7, max_size=7),
    profiles=st.lists(st.sampled_from(["1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb"]), max_size=6),
)
def test_etas_are_never_before_the_slices_can_free(ends: list[int], profiles: list[str]) -> None:
    gpu = device(0, "A100-40GB")
    holdings = [
        Holding(f"s{n}", NOW + timedelta(minutes=end), (Claim(gpu.uuid, n, 1, "1g.5gb"),))
        for n, end in enumerate(ends)
    ]
    planner = planner_for([gpu], None)
    queue = [wait(f"q{i}", Priority.NORMAL, i, p) for i, p in enumerate(profiles)]
    eta = simulate(queue, holdings, planner, NOW)
    first_free = NOW + timedelta(minutes=min(ends))
    for item in queue:
        moment = eta[item.session_id]
        assert moment is not None and moment >= first_free
        # At that moment, with every session known to have ended by then gone, the
        # request alone fits: the simulation never starts what does not fit.
        still = [c for h in holdings if h.expires_at > moment for c in h.claims]
        assert planner(item.request, still) is not None


@given(profiles=st.lists(st.sampled_from(["1g.5gb", "2g.10gb", "3g.20gb", "7g.40gb"]), max_size=8))
def test_the_queue_never_starts_what_does_not_fit(profiles: list[str]) -> None:
    gpu = device(0, "A100-40GB")
    queue = [wait(f"q{i}", Priority.NORMAL, i, p) for i, p in enumerate(profiles)]
    started = startable(queue, [], planner_for([gpu], None))
    used = 0
    for _, claims in started:
        for claim in claims:
            mask = ((1 << claim.size) - 1) << claim.start
            assert not used & mask, "two started requests share a memory slice"
            used |= mask


def test_within_its_guarantee_a_request_reaches_its_own_priority_beyond_it_lower_ones() -> None:
    assert reach(Priority.NORMAL, team_slices=4, ask_slices=3, guarantee=7) == Priority.NORMAL
    assert reach(Priority.NORMAL, team_slices=5, ask_slices=3, guarantee=7) == Priority.LOW
    assert reach(Priority.HIGH, team_slices=0, ask_slices=7, guarantee=0) == Priority.NORMAL
    assert reach(Priority.LOW, team_slices=0, ask_slices=1, guarantee=0) is None
    assert reach(Priority.LOW, team_slices=0, ask_slices=1, guarantee=1) == Priority.LOW


@given(
    priority=st.sampled_from(PRIORITIES),
    team_slices=st.floats(0, 56),
    ask=st.floats(0.25, 56),
    guarantee=st.floats(0, 56),
)
def test_reach_is_never_above_the_requests_own_priority(
    priority: Priority, team_slices: float, ask: float, guarantee: float
) -> None:
    found = reach(priority, team_slices, ask, guarantee)
    assert found is None or found.rank <= priority.rank
    if team_slices + ask > guarantee + 1e-6:
        assert found is None or found.rank < priority.rank
