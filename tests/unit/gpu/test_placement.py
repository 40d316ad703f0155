"""The fragmentation-aware placement policy: valid, never refusing what first fit
places, keeping room for large requests, explaining itself, learning the demand."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.gpu.gpu_helpers import device, instance

from sandman.gpu.catalogue import MODELS, GpuModel, resolve_model, slot_mask, validate_layout
from sandman.gpu.placement import (
    PRIOR,
    DemandRecorder,
    DemandWeights,
    MigGpu,
    capacity,
    fleet_weights,
    place_mig,
    placements_left,
    ranked_profiles,
    shape_of,
)
from sandman.gpu.planner import claim_for, plan
from sandman.gpu.types import Claim, GpuRequest, MigMode

MIG_MODELS = [m for m in MODELS if m.mig_capable]
A100 = "A100-40GB"


def first_fit(name: str, gpus: list[MigGpu]) -> tuple[int, int] | None:
    for pos, g in enumerate(gpus):
        p = g.model.profile(name)
        if p is None or g.counts.get(name, 0) >= p.max_count or (p.media and g.media_used):
            continue
        for s in p.starts:
            if not g.used & slot_mask(s, p.size):
                return pos, s
    return None


def hold(g: MigGpu, name: str, start: int) -> MigGpu:
    p = g.model.profile(name)
    assert p is not None
    counts = dict(g.counts)
    counts[name] = counts.get(name, 0) + 1
    used = g.used | slot_mask(start, p.size)
    return MigGpu(g.index, g.label, g.model, used, counts, g.media_used or p.media)


weights_st = st.dictionaries(
    st.sampled_from([(1, 1), (1, 2), (2, 2), (3, 4), (4, 4), (7, 8), (2, 1), (4, 2)]),
    st.floats(0.0, 1.0),
    min_size=1,
).map(DemandWeights.of)


@settings(max_examples=80, deadline=None)
@given(
    model_index=st.integers(0, len(MIG_MODELS) - 1),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 10_000)), min_size=1, max_size=60),
    weights=weights_st,
)
def test_random_arrivals_and_departures_keep_every_layout_valid(
    model_index: int, ops: list[tuple[bool, int]], weights: DemandWeights
) -> None:
    model = MIG_MODELS[model_index]
    devices = [device(0, model.key), device(1, model.key), device(2, model.key)]
    names = [p.name for p in model.profiles]
    claims: list[Claim] = []
    for allocate, pick in ops:
        if allocate or not claims:
            req = GpuRequest(mig_profile=names[pick % len(names)])
            try:
                [a] = plan(req, devices, claims, allow_fallback=False, demand=weights)
            except Exception as exc:  # only "no room" is allowed
                assert type(exc).__name__ == "CapacityExhausted"
                continue
            assert a.reason
            held = {(c.gpu_uuid, i) for c in claims for i in range(c.start, c.start + c.size)}
            assert not any((a.gpu_uuid, i) in held for i in range(a.start, a.start + a.size))
            claims.append(claim_for(a))
        else:
            claims.pop(pick % len(claims))
        for d in devices:
            mine = [(c.profile or "", c.start) for c in claims if c.gpu_uuid == d.uuid]
            validate_layout(model, mine)


@settings(max_examples=150, deadline=None)
@given(
    model_index=st.integers(0, len(MIG_MODELS) - 1),
    seq=st.lists(st.integers(0, 1000), min_size=1, max_size=40),
    weights=weights_st,
)
def test_never_refuses_what_first_fit_would_place(
    model_index: int, seq: list[int], weights: DemandWeights
) -> None:
    """From any state, the policy finds a valid slot exactly when first fit does."""
    model = MIG_MODELS[model_index]
    gpus = [MigGpu(i, f"GPU {i}", model, 0, {}) for i in range(3)]
    names = [p.name for p in model.profiles]
    for pick in seq:
        name = names[pick % len(names)]
        chosen = place_mig(name, gpus, weights)
        assert (chosen is None) == (first_fit(name, gpus) is None)
        if chosen is None:
            continue
        g = gpus[chosen.gpu]
        p = model.profile(name)
        assert p is not None and chosen.start in p.starts
        assert not g.used & slot_mask(chosen.start, p.size)
        gpus[chosen.gpu] = hold(g, name, chosen.start)


def test_a_1g_keeps_the_4g_and_says_so() -> None:
    gpus = [MigGpu(0, "GPU 0", resolve_model(A100), 0, {})]
    chosen = place_mig("1g.5gb", gpus)
    assert chosen is not None and chosen.start == 6
    assert chosen.reason == "1g.5gb at slice 6 of GPU 0: kept 4g.20gb possible on GPU 0"


@settings(max_examples=60, deadline=None)
@given(seq=st.lists(st.integers(0, 100), min_size=1, max_size=12))
def test_the_reason_names_a_profile_still_possible(seq: list[int]) -> None:
    model = resolve_model("H100-80GB")
    gpus = [MigGpu(i, f"GPU {i}", model, 0, {}) for i in range(2)]
    names = [p.name for p in ranked_profiles(model)]
    for pick in seq:
        name = names[pick % len(names)]
        chosen = place_mig(name, gpus)
        if chosen is None:
            continue
        g = gpus[chosen.gpu] = hold(gpus[chosen.gpu], name, chosen.start)
        assert chosen.reason.startswith(f"{name} at slice {chosen.start} of {g.label}: ")
        if "kept " in chosen.reason:
            kept = chosen.reason.split("kept ")[1].split(" possible")[0]
            left = dict(
                zip(
                    [p.name for p in ranked_profiles(model)],
                    placements_left(model, g.used, g.counts),
                    strict=True,
                )
            )
            assert left[kept] > 0
        else:
            assert "filled" in chosen.reason or "taken whole" in chosen.reason


def test_small_requests_fill_a_used_gpu_before_an_empty_one() -> None:
    model = resolve_model(A100)
    used = hold(MigGpu(0, "GPU 0", model, 0, {}), "4g.20gb", 0)
    chosen = place_mig("2g.10gb", [MigGpu(1, "GPU 1", model, 0, {}), used])
    assert chosen is not None and chosen.gpu == 1 and chosen.start == 4


def test_whole_gpu_memory_requests_take_a_gpu_without_mig_before_breaking_up_a_mig_one() -> None:
    devices = [device(0, A100), device(1, "L40S")]
    [a] = plan(GpuRequest(gpu_memory_gb=30), devices, [])
    assert a.kind == "whole_gpu" and a.gpu_uuid == devices[1].uuid
    assert a.reason is not None and "without MIG" in a.reason
    # with the GPU without MIG taken, the empty MIG GPU is given whole as a 7g
    [b] = plan(GpuRequest(gpu_memory_gb=30), devices, [claim_for(a)])
    assert b.profile == "7g.40gb" and b.reason is not None and "empty GPU" in b.reason


def test_whole_gpu_count_takes_untouched_gpus_without_mig() -> None:
    devices = [device(0, A100), device(1, "RTX-4090"), device(2, "RTX-4090")]
    claims = [claim_for(plan(GpuRequest(mig_profile="1g.5gb"), devices, [])[0])]
    [a] = plan(GpuRequest(gpu_count=1), devices, claims)
    assert a.gpu_uuid == devices[1].uuid and a.reason and "without MIG" in a.reason


def test_static_gpus_hand_out_from_the_one_already_in_use() -> None:
    insts0 = tuple(instance(A100, "1g.5gb", s, n=s) for s in range(7))
    insts1 = tuple(instance(A100, "1g.5gb", s, n=10 + s) for s in range(7))
    devices = [device(0, A100, MigMode.STATIC, insts0), device(1, A100, MigMode.STATIC, insts1)]
    first = plan(GpuRequest(mig_profile="1g.5gb"), devices, [])[0]
    claims = [claim_for(first)]
    second = plan(GpuRequest(mig_profile="1g.5gb"), devices, claims)[0]
    assert second.gpu_uuid == first.gpu_uuid
    assert second.reason and "1 untouched static GPU(s) kept whole" in second.reason


def _exhaustive(model: GpuModel, length: int) -> tuple[int, int, int]:
    """Every arrival sequence of the ranked profiles up to ``length`` on one GPU: how many
    the policy admits fewer of than first fit, more of, and how many in all."""
    names = [p.name for p in ranked_profiles(model)]
    fewer = more = total = 0

    def walk(ours: MigGpu, theirs: MigGpu, diff: int, depth: int) -> None:
        nonlocal fewer, more, total
        for name in names:
            mine = place_mig(name, [ours])
            ff = first_fit(name, [theirs])
            o = hold(ours, name, mine.start) if mine else ours
            t = hold(theirs, name, ff[1]) if ff else theirs
            d = diff + (mine is not None) - (ff is not None)
            total += 1
            fewer += d < 0
            more += d > 0
            if depth + 1 < length:
                walk(o, t, d, depth + 1)

    empty = MigGpu(0, "GPU 0", model, 0, {})
    walk(empty, empty, 0, 0)
    return fewer, more, total


# With the prior's weights every sequence counts the same here, though the prior makes
# some far likelier than others; the two models share one geometry, so one count.
@pytest.mark.parametrize(("key", "expected"), [(A100, (5531, 5344)), ("H100-80GB", (5531, 5344))])
def test_exhaustive_sequences_up_to_six(key: str, expected: tuple[int, int]) -> None:
    """Of the 55,986 sequences, how many the policy admits fewer / more of than first fit
    (pinned: a change of policy must say what it does to these counts)."""
    fewer, more, total = _exhaustive(resolve_model(key), 6)
    assert total == sum(6**k for k in range(1, 7))
    assert (fewer, more) == expected


@pytest.mark.parametrize("key", [A100, "H100-80GB"])
def test_the_benchmark_counts_the_same_sequences(key: str) -> None:
    """``bench_planner.py --exhaustive`` (its own first fit, on its own machine model)
    reports the counts this test pins."""
    from bench.bench_planner import exhaustive

    model = resolve_model(key)
    assert exhaustive(model, 4) == _exhaustive(model, 4)


def test_learnt_weights_converge_on_a_fixed_distribution() -> None:
    target = {(1, 1): 0.5, (2, 2): 0.3, (4, 4): 0.2}
    recorder = DemandRecorder(half_life=2000)
    rng = random.Random(7)
    shapes, probs = list(target), list(target.values())
    for _ in range(20_000):
        recorder.record(rng.choices(shapes, probs)[0])
    learnt = recorder.weights().as_dict()
    for shape, share in target.items():
        assert learnt.get(shape, 0.0) == pytest.approx(share, abs=0.03)
    assert sum(w for s, w in learnt.items() if s not in target) < 0.01


def test_recorder_starts_from_the_prior_and_records_grants() -> None:
    recorder = DemandRecorder()
    assert recorder.weights() == PRIOR
    model = resolve_model(A100)
    p = model.profile("3g.20gb")
    assert p is not None
    devices = [device(0, A100)]
    [a] = plan(GpuRequest(mig_profile="3g.20gb"), devices, [])
    before = recorder.weights().weight(shape_of(p))
    for _ in range(50):
        recorder.record_grant([a], devices)
    recorder.record_asked("no-such-profile", devices)
    assert recorder.weights().weight(shape_of(p)) > before


SMALL_HEAVY = DemandWeights.of(
    {(1, 1): 0.55, (2, 2): 0.2, (3, 4): 0.15, (4, 4): 0.05, (7, 8): 0.05}
)


def test_the_fleet_fills_a_gpu_in_use_before_opening_an_untouched_one() -> None:
    """Per GPU a rare 7g is worth little, so a 1g would open the empty GPU (it destroys
    fewer weighted places there than beside a 3g); across the fleet the untouched GPU
    is the last 7g place and the 1g places are plentiful, so the 1g goes beside a 3g."""
    model = resolve_model("H100-80GB")
    gpus = [hold(MigGpu(i, f"GPU {i}", model, 0, {}), "3g.40gb", 4) for i in range(2)]
    gpus.append(MigGpu(2, "GPU 2", model, 0, {}))
    p = model.profile("1g.10gb")
    assert p is not None
    # the per-GPU measure alone prefers the empty GPU
    g = gpus[0]
    lost_used = capacity(model, g.used, g.counts, SMALL_HEAVY) - capacity(
        model, g.used | slot_mask(0, p.size), {**g.counts, p.name: 1}, SMALL_HEAVY
    )
    lost_empty = capacity(model, 0, {}, SMALL_HEAVY) - capacity(
        model, slot_mask(6, p.size), {p.name: 1}, SMALL_HEAVY
    )
    assert lost_empty < lost_used
    chosen = place_mig("1g.10gb", gpus, SMALL_HEAVY)
    assert chosen is not None and (chosen.gpu, chosen.start) == (0, 0)
    assert chosen.reason == "1g.10gb at slice 0 of GPU 0: kept 2g.20gb possible on GPU 0"


def test_fleet_weights_are_demand_over_the_places_left() -> None:
    model = resolve_model("H100-80GB")
    gpus = [MigGpu(i, f"GPU {i}", model, 0, {}) for i in range(4)]
    gpus[0] = hold(gpus[0], "4g.40gb", 0)
    w = fleet_weights(gpus, SMALL_HEAVY)
    assert w[(7, 8)] == pytest.approx(0.05 / 3)  # three untouched GPUs
    assert w[(4, 4)] == pytest.approx(0.05 / 3)
    assert w[(1, 1)] == pytest.approx(0.55 / (3 * 7 + 3))
    # a shape with no place left anywhere counts its demand once, not infinitely
    full = [hold(MigGpu(0, "GPU 0", model, 0, {}), "7g.80gb", 0)]
    assert fleet_weights(full, SMALL_HEAVY)[(7, 8)] == pytest.approx(0.05)
