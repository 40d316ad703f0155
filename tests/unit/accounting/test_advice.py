"""MIG layout advice: the candidates are NVIDIA's full layouts, the replay is a loss
system, and the advice is a layout the model can hold that never serves less than
today's on the same requests."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandman.accounting.advice import (
    Ask,
    advise,
    full_layouts,
    layout_label,
    served,
)
from sandman.gpu.catalogue import MODELS_BY_KEY, find_model, is_valid_layout, slot_mask

A100 = MODELS_BY_KEY["A100-40GB"]
MIG_MODELS = sorted(k for k, m in MODELS_BY_KEY.items() if m.mig_capable)
H = 3600.0


def test_the_a100_has_a_few_dozen_full_layouts_among_them_the_known_ones() -> None:
    labels = {layout.label for layout in full_layouts("A100-40GB")}
    assert 20 <= len(labels) <= 60
    for known in ("7x1g.5gb", "4g.20gb+3g.20gb", "2x3g.20gb", "7g.40gb", "3x2g.10gb+1g.5gb"):
        assert known in labels
    assert not any("+me" in label for label in labels)


@pytest.mark.parametrize("key", MIG_MODELS)
def test_every_candidate_is_valid_full_and_distinct(key: str) -> None:
    model = MODELS_BY_KEY[key]
    layouts = full_layouts(key)
    assert layouts
    assert len({layout.profiles for layout in layouts}) == len(layouts)
    for layout in layouts:
        assert is_valid_layout(model, layout.placements)
        assert sorted(layout.profiles) == sorted(name for name, _ in layout.placements)
        used = 0
        for name, start in layout.placements:
            used |= slot_mask(start, model.profile(name).size)  # type: ignore[union-attr]
        counts = Counter(layout.profiles)
        for p in model.profiles:
            if p.media or counts[p.name] >= p.max_count:
                continue
            for start in p.starts:
                assert used & slot_mask(start, p.size), f"{p.name}@{start} still fits"


def test_models_without_mig_have_no_layouts() -> None:
    assert full_layouts("RTX-4090") == ()
    assert full_layouts("no-such-gpu") == ()


def test_a_request_finding_no_free_instance_is_lost() -> None:
    asks = [
        Ask(0, 2, "1g.5gb"),
        Ask(1 * H, 2, "1g.5gb"),  # the only 1g is busy until 2h: lost
        Ask(2 * H, 1, "1g.5gb"),  # free again at 2h exactly
        Ask(0, 1, "3g.20gb"),  # no 3g at all
    ]
    assert served(A100, {"1g.5gb": 1}, asks) == 3.0
    assert served(A100, {"1g.5gb": 2}, asks) == 5.0
    assert served(A100, {"1g.5gb": 2, "3g.20gb": 1}, asks) == 8.0


def test_a_memory_request_takes_the_smallest_free_instance_with_enough() -> None:
    asks = [Ask(0, 1, memory_gb=8), Ask(0, 1, memory_gb=8), Ask(0, 1, memory_gb=30)]
    # 10 GB: 1g.10gb first, then 2g.10gb; it counts what it needed (1 slice an hour)
    assert served(A100, {"1g.10gb": 1, "2g.10gb": 1}, asks) == 2.0
    # two 8 GB asks take the 4g and the 7g: the 30 GB one finds nothing left
    assert served(A100, {"4g.20gb": 1, "7g.40gb": 1}, asks) == 2.0
    assert served(A100, {"4g.20gb": 1, "7g.40gb": 1}, asks[::-1]) == 7.0 + 1.0


def test_the_advice_names_the_layout_that_serves_the_demand() -> None:
    asks = [Ask(i * H, 4, "3g.20gb") for i in range(3)] + [Ask(0, 1, "1g.5gb")]
    advice = advise(A100, [["1g.5gb"] * 7], asks)
    assert advice.layout is not None and advice.layout.label == "2x3g.20gb"
    assert advice.current == "7x1g.5gb" and advice.current_slice_hours == 1
    assert advice.slice_hours == 24 and advice.asked_slice_hours == 37
    assert advice.gain_percent == pytest.approx(2300)
    assert advice.line == (
        "A100-40GB x1 (static): the layout 2x3g.20gb would have served 24 slice-hours "
        "of 37 asked, 2300% more than today's 7x1g.5gb (1)"
    )


def test_today_s_layout_is_kept_when_nothing_serves_more() -> None:
    asks = [Ask(0, 10, "1g.5gb") for _ in range(7)]
    advice = advise(A100, [["1g.5gb"] * 7, ["1g.5gb"] * 7], asks)
    assert advice.layout is None and advice.slice_hours == advice.current_slice_hours == 70
    assert advice.line.startswith("A100-40GB x2 (static): keep today's 7x1g.5gb")


def test_no_demand_keeps_today_s_with_a_note() -> None:
    advice = advise(A100, [["3g.20gb", "3g.20gb"]], [Ask(0, 1, "1g.10gb+me"), Ask(0, 1)])
    assert advice.layout is None and advice.requests == 0
    assert advice.notes == ("no request in the window could use this model's MIG instances",)
    assert advice.gain_percent is None


def test_the_replay_is_capped_to_the_latest_requests() -> None:
    asks = [Ask(i * H, 0.5, "1g.5gb") for i in range(50)]
    advice = advise(A100, [[]], asks, max_asks=10)
    assert advice.requests == 50 and advice.replayed == 10
    assert advice.notes == ("only the last 10 of 50 requests were replayed",)
    assert advice.asked_slice_hours == 5


def test_labels_count_repeats() -> None:
    assert layout_label(["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"]) == "3g.20gb+2g.10gb+2x1g.5gb"
    assert layout_label([]) == "empty"


def _current(key: str) -> st.SearchStrategy[list[str]]:
    """Today's layout of one GPU: any full layout, or a valid part of one."""
    layouts = full_layouts(key)
    return st.sampled_from(layouts).flatmap(
        lambda layout: st.lists(
            st.sampled_from(layout.profiles), max_size=len(layout.profiles), unique_by=None
        ).map(lambda picked: _within(layout.profiles, picked))
    )


def _within(profiles: tuple[str, ...], picked: list[str]) -> list[str]:
    """The picked profiles, never more of one than the layout has."""
    left = Counter(profiles)
    out = []
    for name in picked:
        if left[name] > 0:
            left[name] -= 1
            out.append(name)
    return out


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str, list[list[str]], list[Ask]]:
    key = draw(st.sampled_from(MIG_MODELS))
    model = find_model(key)
    assert model is not None
    gpus = draw(st.lists(_current(key), min_size=1, max_size=3))
    names = [p.name for p in model.profiles]
    ask = st.builds(
        Ask,
        at=st.floats(0, 30 * 24 * H, allow_nan=False),
        hours=st.floats(0, 72, allow_nan=False),
        profile=st.one_of(st.none(), st.sampled_from(names)),
        memory_gb=st.one_of(st.none(), st.floats(1, 200, allow_nan=False)),
    )
    return key, gpus, draw(st.lists(ask, max_size=80))


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_the_advice_is_a_valid_layout_never_worse_than_today_s(
    scenario: tuple[str, list[list[str]], list[Ask]],
) -> None:
    key, current, asks = scenario
    model = MODELS_BY_KEY[key]
    advice = advise(model, current, asks)
    today = Counter(name for gpu in current for name in gpu)
    assert advice.current_slice_hours == pytest.approx(served(model, today, asks))
    assert advice.slice_hours >= advice.current_slice_hours
    assert advice.slice_hours <= advice.asked_slice_hours + 1e-6
    if advice.layout is not None:
        assert is_valid_layout(model, advice.layout.placements)
        assert advice.layout in full_layouts(key)
        counts = Counter({n: c * len(current) for n, c in advice.layout.counts.items()})
        assert advice.slice_hours == pytest.approx(served(model, counts, asks))
        assert advice.slice_hours > advice.current_slice_hours
    # nothing in the candidates serves more than the advice
    for layout in full_layouts(key):
        counts = Counter({n: c * len(current) for n, c in layout.counts.items()})
        assert served(model, counts, asks) <= advice.slice_hours + 1e-9


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 100 * H, allow_nan=False), st.floats(0.01, 10, allow_nan=False)),
        max_size=40,
    ),
    st.integers(0, 6),
)
def test_one_profile_never_serves_more_than_its_instances_can_hold(
    arrivals: list[tuple[float, float]], instances: int
) -> None:
    asks = [Ask(at, hours, "1g.5gb") for at, hours in arrivals]
    total = served(A100, {"1g.5gb": instances}, asks)
    assert total <= sum(hours for _, hours in arrivals) + 1e-9
    if instances == 0:
        assert total == 0
    if instances >= len(asks):
        assert total == pytest.approx(sum(hours for _, hours in arrivals))
