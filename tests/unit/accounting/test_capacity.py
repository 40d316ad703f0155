"""The capacity view's arithmetic: capacity per profile, the peak held at once, and
the demand by outcome."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.gpu.gpu_helpers import device, instance

from sandman.accounting.capacity import (
    SHARED,
    WHOLE_GPU,
    Asked,
    Held,
    ask_key,
    capacity_of,
    capacity_view,
    held_of,
    hours_within,
    peak,
    refused_by_quota,
)
from sandman.gpu.catalogue import MODELS_BY_KEY
from sandman.gpu.types import GpuSharing, MigInstance, MigMode

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def a100(layout: Iterable[tuple[str, int]]) -> tuple[MigInstance, ...]:
    return tuple(instance("A100-40GB", name, start, n) for n, (name, start) in enumerate(layout))


def test_capacity_counts_instances_by_mode() -> None:
    layout = (("3g.20gb", 0), ("2g.10gb", 4), ("1g.5gb", 6))
    static = device(0, "A100-40GB", MigMode.STATIC, a100(layout))
    dynamic = device(1, "A100-40GB", MigMode.DYNAMIC)
    whole = device(2, "RTX-4090", MigMode.DISABLED)
    shared = replace(device(3, "L4"), sharing=GpuSharing("time-slicing", 4))
    found = capacity_of([static, dynamic, whole, shared])
    assert found["3g.20gb"] == (1 + 2, 3 + 6)
    assert found["2g.10gb"] == (1 + 3, 2 + 6)
    assert found["1g.5gb"] == (1 + 7, 1 + 7)
    assert found["7g.40gb"] == (1, 7)
    assert found[WHOLE_GPU] == (2, 14)
    assert found[SHARED] == (4, 7)


def test_peak_is_the_most_held_at_once_within_the_window() -> None:
    held = [
        Held("1g.5gb", 1, at(-5), at(2)),  # began before the window
        Held("1g.5gb", 1, at(1), at(3)),
        Held("1g.5gb", 1, at(2), None),  # starts as the first ends: never three at once
        Held("1g.5gb", 1, at(20), at(30)),  # after the window
    ]
    assert peak(held, at(0), at(10)) == 2
    assert peak(held, at(0), at(1)) == 1
    assert peak([], at(0), at(1)) == 0
    assert hours_within(held[0], at(0), at(10)) == 2
    assert hours_within(held[2], at(0), at(10)) == 8


def test_a_session_holds_its_profile_a_share_or_whole_gpus() -> None:
    mig = held_of("3g.20gb", None, "MIG-1", "NVIDIA A100-SXM4-40GB", at(0), None)
    assert mig == Held("3g.20gb", 3, at(0), None)
    shared = held_of(None, 0.25, "GPU-1", "NVIDIA L4", at(0), at(1))
    assert shared == Held(SHARED, 1.75, at(0), at(1))
    whole = held_of(None, None, "GPU-1,GPU-2", "NVIDIA GeForce RTX 4090", at(0), None)
    assert whole == Held(WHOLE_GPU, 14, at(0), None)
    assert held_of(None, None, None, None, at(0), None) is None


def test_what_a_request_counts_under() -> None:
    models = [MODELS_BY_KEY["A100-40GB"]]
    assert ask_key("2g.10gb", None, None, False, models) == "2g.10gb"
    assert ask_key(None, 2, None, False, models) == WHOLE_GPU
    assert ask_key(None, 0, None, False, models) is None
    assert ask_key(None, None, None, True, models) == SHARED
    assert ask_key(None, None, 8, False, models) == "1g.10gb"
    assert ask_key(None, None, 200, False, models) == WHOLE_GPU
    assert ask_key(None, None, None, False, models) is None


def test_quota_refusals_are_told_from_a_lack_of_room() -> None:
    assert refused_by_quota("user ann: uses 2 of 2 slices; this request needs 1 (max_slices)")
    assert refused_by_quota("team x: allows 1g.5gb, not 3g.20gb (allowed_profiles)")
    assert not refused_by_quota("no free 3g.20gb: free now: 6x 1g.5gb on GPU-1")
    assert not refused_by_quota(None)


def test_the_view_puts_demand_beside_capacity() -> None:
    gpu = device(0, "A100-40GB", MigMode.STATIC, a100(("1g.5gb", s) for s in range(7)))
    held = [Held("1g.5gb", 1, at(1), at(3)), Held("1g.5gb", 1, at(2), None)]
    asked = [
        Asked(at(1), "1g.5gb", 1, 120, "started"),
        Asked(at(2), "1g.5gb", 1, 60, "started"),
        Asked(at(3), "3g.20gb", 3, 120, "refused", "no free 3g.20gb"),
        Asked(at(4), "3g.20gb", 3, 60, "queued", "no free 3g.20gb"),
        Asked(at(5), "1g.5gb", 1, 60, "refused", "user x: has 1 of 1 sessions (max_sessions)"),
        Asked(at(-1), "1g.5gb", 1, 60, "refused", "before the window"),
    ]
    view = capacity_view([gpu], held, asked, at(0), at(10), ["keep"])
    rows = {r.key: r for r in view.profiles}
    assert [r.key for r in view.profiles] == ["3g.20gb", "1g.5gb"]
    one, three = rows["1g.5gb"], rows["3g.20gb"]
    assert (one.capacity_instances, one.capacity_slices, one.peak_slices) == (7, 7, 2)
    assert one.served_slice_hours == 2 + 8
    assert one.requests == {"started": 2, "queued": 0, "refused": 1}
    assert one.refused_by_quota == 1
    assert three.requests == {"started": 0, "queued": 1, "refused": 1}
    assert three.asked_slice_hours == {"started": 0, "queued": 3, "refused": 6}
    assert three.slices_each == 3 and three.capacity_slices == 0
    assert view.total_slices == 7 and view.peak_slices == 2 and view.advice == ("keep",)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(-10, 30, allow_nan=False),
            st.floats(0, 20, allow_nan=False),
            st.integers(1, 7),
        ),
        max_size=30,
    )
)
def test_the_peak_is_at_most_the_sum_and_at_least_any_one(
    grants: list[tuple[float, float, int]],
) -> None:
    held = [Held("x", s, at(start), at(start + length)) for start, length, s in grants]
    since, until = at(0), at(24)
    top = peak(held, since, until)
    inside = [h for h in held if hours_within(h, since, until) > 0]
    assert top <= sum(h.slices for h in inside)
    assert top >= max((h.slices for h in inside), default=0)
    # the peak is reached at some grant's start within the window
    starts = {max(h.start, since) for h in inside}
    assert (
        any(sum(h.slices for h in inside if h.start <= t < (h.end or until)) == top for t in starts)
        or not inside
    )
