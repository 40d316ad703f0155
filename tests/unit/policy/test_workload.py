"""The workload policy: the least memory at or above the request, ties to the fewest
slices, MIG for inference and development, whole GPUs for training where there are."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.gpu.gpu_helpers import device

from sandman.errors import InvalidRequest
from sandman.gpu.catalogue import MODELS
from sandman.gpu.planner import plan
from sandman.gpu.types import GpuDevice, GpuRequest, MigMode
from sandman.policy.workload import (
    WORKLOAD_PATTERN,
    Candidate,
    WorkloadType,
    candidates,
    choose,
    parse_workload,
)

MIXED = [device(0, "A100-80GB"), device(1, "RTX-4090")]
MODEL_KEYS = [m.key for m in MODELS]


def test_the_seed_spelling_is_accepted_and_others_are_refused_with_the_list() -> None:
    assert parse_workload("Inference") is WorkloadType.INFERENCE
    assert parse_workload(" TRAINING ") is WorkloadType.TRAINING
    with pytest.raises(InvalidRequest, match="valid: training, inference, interactive"):
        parse_workload("batch")
    import re

    assert re.fullmatch(WORKLOAD_PATTERN, "DeVeLoPmEnT")
    assert not re.fullmatch(WORKLOAD_PATTERN, "serving")


def test_inference_gets_the_smallest_mig_slice_with_the_memory() -> None:
    chosen = choose(WorkloadType.INFERENCE, 20, MIXED)
    # 1g.20gb and 2g.20gb both have 20 GB: the one with fewer slices wins.
    assert chosen.request == GpuRequest(mig_profile="1g.20gb")
    assert not chosen.fallback
    assert choose(WorkloadType.DEVELOPMENT, 5, MIXED).request.mig_profile == "1g.10gb"


def test_training_gets_a_whole_gpu_where_the_machine_has_one() -> None:
    chosen = choose(WorkloadType.TRAINING, 20, MIXED)
    assert chosen.request == GpuRequest(gpu_memory_gb=20, whole=True)
    assert chosen.candidate.name == "RTX-4090"
    # Larger than the whole GPU: MIG's 3g.40gb, said so.
    big = choose(WorkloadType.TRAINING, 30, MIXED)
    assert big.request.mig_profile == "3g.40gb" and big.fallback
    assert "no whole GPU here has the memory" in big.reason


def test_training_without_a_figure_asks_for_a_whole_gpus_worth() -> None:
    assert choose(WorkloadType.TRAINING, None, MIXED).candidate.name == "RTX-4090"
    only_mig = [device(0, "A100-40GB")]
    assert choose(WorkloadType.TRAINING, None, only_mig).request.mig_profile == "7g.40gb"
    assert choose(WorkloadType.INFERENCE, None, only_mig).request.mig_profile == "1g.5gb"


def test_interactive_takes_the_smallest_of_either_kind() -> None:
    assert choose(WorkloadType.INTERACTIVE, 20, MIXED).request.mig_profile == "1g.20gb"
    assert choose(WorkloadType.INTERACTIVE, 22, MIXED).candidate.name == "RTX-4090"


def test_use_mig_overrides_the_workload() -> None:
    assert choose(WorkloadType.INFERENCE, 20, MIXED, use_mig=False).candidate.kind == "whole"
    assert choose(WorkloadType.TRAINING, 20, MIXED, use_mig=True).candidate.kind == "mig"
    # Nothing of the asked kind: the other, marked as a fallback.
    whole_only = [device(0, "RTX-4090")]
    assert choose(WorkloadType.INFERENCE, 8, whole_only, use_mig=True).fallback


def test_more_memory_than_any_gpu_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="no GPU on this machine offers 100 GB"):
        choose(WorkloadType.INFERENCE, 100, MIXED)
    with pytest.raises(InvalidRequest, match="positive"):
        choose(WorkloadType.INFERENCE, 0, MIXED)


def test_static_gpus_offer_their_models_profiles_and_media_variants_never() -> None:
    static = [device(0, "A100-40GB", MigMode.STATIC)]
    names = {c.name for c in candidates(static)}
    assert "3g.20gb" in names and not any(n.endswith("+me") for n in names)


def test_the_planner_places_what_the_policy_chose() -> None:
    whole = choose(WorkloadType.TRAINING, 20, MIXED).request
    [grant] = plan(whole, MIXED, [])
    assert grant.kind == "whole_gpu" and grant.gpu_uuid == MIXED[1].uuid
    [slice_] = plan(choose(WorkloadType.INFERENCE, 20, MIXED).request, MIXED, [])
    assert slice_.kind == "mig_create" and slice_.profile == "1g.20gb"
    # A whole-only request never becomes MIG, however small.
    with pytest.raises(InvalidRequest, match="no GPU on this machine has 30 GB"):
        plan(GpuRequest(gpu_memory_gb=30, whole=True), MIXED, [])


@st.composite
def topologies(draw: st.DrawFn) -> list[GpuDevice]:
    keys = draw(st.lists(st.sampled_from(MODEL_KEYS), min_size=1, max_size=4))
    found = []
    for i, key in enumerate(keys):
        mode = None
        if any(m.key == key and m.mig_capable for m in MODELS):
            mode = draw(st.sampled_from(list(MigMode)))
        found.append(device(i, key, mode))
    return found


def _order(c: Candidate) -> tuple[float, float]:
    return (c.memory_gb, c.slices)


@given(
    topologies(),
    st.sampled_from(list(WorkloadType)),
    st.one_of(st.none(), st.floats(0.5, 200)),
    st.sampled_from([None, True, False]),
)
def test_the_choice_has_the_memory_and_nothing_smaller_of_its_kind_was_skipped(
    devices: list[GpuDevice],
    workload: WorkloadType,
    memory: float | None,
    use_mig: bool | None,
) -> None:
    offered = candidates(devices)
    try:
        chosen = choose(workload, memory, devices, use_mig)
    except InvalidRequest:
        assert memory is not None and all(c.memory_gb < memory for c in offered)
        return
    got = chosen.candidate
    assert got in offered
    if memory is not None:
        assert got.memory_gb >= memory  # at least the memory asked
        fitting = [c for c in offered if c.memory_gb >= memory]
        same_kind = [c for c in fitting if c.kind == got.kind]
        # No candidate of its kind with less memory, or equal memory and fewer slices.
        assert all(_order(got) <= _order(c) for c in same_kind)
        preferred = {True: "mig", False: "whole", None: None}[use_mig]
        if preferred is None and workload is WorkloadType.TRAINING:
            preferred = "whole"
        if preferred is None and workload is not WorkloadType.INTERACTIVE:
            preferred = "mig"
        if preferred is None:  # interactive: the smallest of all
            assert all(_order(got) <= _order(c) for c in fitting)
        elif got.kind != preferred:  # only when nothing of the preferred kind fits
            assert chosen.fallback and not [c for c in fitting if c.kind == preferred]
    has_whole = any(d.mig_mode is MigMode.DISABLED for d in devices)
    if workload is WorkloadType.TRAINING and use_mig is None and has_whole and memory is None:
        assert got.kind == "whole"  # training: a whole GPU wherever there is one
    if got.kind == "mig":
        assert chosen.request == GpuRequest(mig_profile=got.name)
    else:
        assert chosen.request.whole and chosen.request.gpu_memory_gb is not None
