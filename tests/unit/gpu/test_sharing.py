"""Shared GPUs (time-slicing, MPS): settings, placement, claims and their summary."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.gpu.gpu_helpers import device
from tests.unit.gpu.test_nvml import fake_pynvml

from sandman.errors import CapacityExhausted, ConfigurationError, InvalidRequest
from sandman.gpu.inventory.nvml import NvmlInventory
from sandman.gpu.inventory.simulated import SimulatedInventory
from sandman.gpu.planner import claim_for, claim_units, free_summary, plan
from sandman.gpu.sharing import session_share, share_note
from sandman.gpu.topology import load_topology, parse_sharing_setting, parse_topology
from sandman.gpu.types import Allocation, Claim, GpuDevice, GpuRequest, GpuSharing, MigMode

SHARED = GpuRequest(shared=True)
WHOLE = GpuRequest(gpu_count=1)


def shared(index: int, mode: str = "time-slicing", replicas: int = 4) -> GpuDevice:
    sharing = GpuSharing("mps" if mode == "mps" else "time-slicing", replicas)
    return replace(device(index, "L4"), sharing=sharing)


def take(request: GpuRequest, devices: list[GpuDevice], claims: list[Claim]) -> Allocation:
    [alloc] = plan(request, devices, claims, default_profile=None)
    claims.append(claim_for(alloc))
    return alloc


# ---- settings ------------------------------------------------------------------


def test_topology_sharing_in_both_spellings() -> None:
    topo = parse_topology(
        {
            "gpus": [
                {"model": "L4", "sharing": {"mode": "time-slicing", "replicas": 4}},
                {"model": "RTX-4090", "sharing": "mps:2"},
                {"model": "A100-SXM4-40GB", "sharing": "mps:3"},  # MIG off when shared
                "L4",
            ]
        }
    )
    assert [g.sharing for g in topo.gpus] == [
        GpuSharing("time-slicing", 4),
        GpuSharing("mps", 2),
        GpuSharing("mps", 3),
        None,
    ]
    assert topo.gpus[2].mig is MigMode.DISABLED


def test_a_mig_gpu_with_sharing_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"sharing .*needs MIG disabled.*dynamic"):
        parse_topology(
            {"gpus": [{"model": "A100-SXM4-40GB", "mig": "dynamic", "sharing": "mps:2"}]}
        )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("mps", "MODE:REPLICAS"),
        ("mps:1", "from 2 to 48"),
        ("mps:x", "from 2 to 48"),
        ("vgpu:2", "time-slicing or mps"),
        ({"mode": "mps"}, "exactly 'mode' and 'replicas'"),
    ],
)
def test_bad_sharing_is_refused(value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_topology({"gpus": [{"model": "L4", "sharing": value}]})


def test_the_nvml_setting_for_all_gpus_or_each() -> None:
    assert parse_sharing_setting("") == {}
    assert parse_sharing_setting("mps:4") == {"*": GpuSharing("mps", 4)}
    assert parse_sharing_setting("0=mps:4, GPU-abc=time-slicing:2") == {
        "0": GpuSharing("mps", 4),
        "GPU-abc": GpuSharing("time-slicing", 2),
    }
    with pytest.raises(ConfigurationError, match="cannot be mixed"):
        parse_sharing_setting("mps:4,1=mps:2")
    with pytest.raises(ConfigurationError, match="given twice"):
        parse_sharing_setting("1=mps:4,1=mps:2")


def test_the_shipped_preset_and_the_simulated_inventory() -> None:
    inventory = SimulatedInventory(load_topology("l4-x2-shared"))
    first, second = inventory.devices()
    assert first.sharing == GpuSharing("time-slicing", 4)
    assert second.sharing == GpuSharing("mps", 2)
    assert first.mig_mode is MigMode.DISABLED


def test_nvml_gpus_are_shared_by_the_setting() -> None:
    rtx = "GPU-bbbbbbbb-0000-0000-0000-000000000000"
    inv = NvmlInventory(nvml=fake_pynvml(), sharing=parse_sharing_setting("mps:4"))
    a100, gpu = inv.devices()
    assert a100.sharing is None  # MIG enabled: never shared by "every GPU"
    assert gpu.sharing == GpuSharing("mps", 4)
    inv = NvmlInventory(nvml=fake_pynvml(), sharing={rtx: GpuSharing("time-slicing", 2)})
    assert inv.devices()[1].sharing == GpuSharing("time-slicing", 2)


def test_nvml_sharing_of_a_mig_gpu_or_a_missing_one_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"GPU 0 .*MIG enabled"):
        NvmlInventory(nvml=fake_pynvml(), sharing=parse_sharing_setting("0=mps:2"))
    with pytest.raises(ConfigurationError, match="does not have: 7"):
        NvmlInventory(nvml=fake_pynvml(), sharing=parse_sharing_setting("7=mps:2"))


# ---- placement -------------------------------------------------------------------


def test_a_shared_request_fills_the_fullest_gpu_first() -> None:
    devices = [shared(0), shared(1)]
    claims: list[Claim] = []
    first = take(SHARED, devices, claims)
    assert (first.gpu_uuid, first.kind, first.replica) == (devices[0].uuid, "gpu_share", 0)
    assert first.share == 0.25 and first.memory_mb == devices[0].memory_total_mb
    assert "no memory isolation" in first.notes[0]
    # GPU 1 stays whole: the next replicas go to GPU 0 until it is full
    assert [take(SHARED, devices, claims).gpu_uuid for _ in range(3)] == [devices[0].uuid] * 3
    assert take(SHARED, devices, claims).gpu_uuid == devices[1].uuid


def test_fullest_counts_the_fraction_held() -> None:
    devices = [shared(0, replicas=4), shared(1, replicas=2)]
    claims = [Claim(devices[0].uuid, 0, 1, None, replica=0)]  # 1/4 held
    claims.append(Claim(devices[1].uuid, 1, 1, None, replica=1))  # 1/2 held
    alloc = take(SHARED, devices, claims)
    assert (alloc.gpu_uuid, alloc.replica) == (devices[1].uuid, 0)


def test_mps_replicas_carry_their_limits() -> None:
    gpu = shared(0, "mps", 4)
    alloc = take(SHARED, [gpu], [])
    assert alloc.memory_mb == gpu.memory_total_mb // 4
    assert alloc.notes == (
        f"MPS limits this session to 25% of the GPU's threads and {gpu.memory_total_mb // 4} "
        "MiB of its memory (1 of 4 sessions sharing it)",
    )
    share = session_share([alloc])
    assert share is not None and share.thread_percentage == 25 and share.share == 0.25


def test_whole_requests_leave_partly_shared_gpus_alone() -> None:
    devices = [shared(0), shared(1)]
    claims: list[Claim] = []
    take(SHARED, devices, claims)
    whole = take(WHOLE, devices, claims)
    assert whole.gpu_uuid == devices[1].uuid and whole.kind == "whole_gpu"
    with pytest.raises(CapacityExhausted, match="1 free whole GPUs"):
        plan(WHOLE, devices, claims)
    # ... and a GPU held whole gives no replica
    with pytest.raises(CapacityExhausted, match="every replica"):
        for _ in range(4):
            take(SHARED, devices, claims)


def test_whole_requests_take_unshared_gpus_first() -> None:
    devices = [shared(0), device(1, "L4")]
    assert take(WHOLE, devices, []).gpu_uuid == devices[1].uuid


def test_shared_without_shared_gpus_is_never_servable() -> None:
    with pytest.raises(InvalidRequest, match="no GPU on this machine is shared"):
        plan(SHARED, [device(0, "L4"), device(1, "A100-40GB")], [])


def test_shared_is_exclusive_with_the_other_fields() -> None:
    with pytest.raises(InvalidRequest, match="shared"):
        plan(GpuRequest(shared=True, gpu_count=1), [shared(0)], [])


def test_claim_units_make_replicas_and_whole_grants_exclusive() -> None:
    gpu = shared(0, replicas=3)
    share = take(SHARED, [gpu], [])
    assert claim_units(share) == ["replica:0"]
    whole = take(WHOLE, [gpu], [])
    assert claim_units(whole) == ["gpu", "replica:0", "replica:1", "replica:2"]
    assert claim_units(take(WHOLE, [device(0, "L4")], [])) == ["gpu"]


def test_free_summary_shows_replicas_held() -> None:
    gpu = shared(0, "mps", 4)
    claims: list[Claim] = []
    take(SHARED, [gpu], claims)
    summary: Any = free_summary([gpu], claims)
    entry = summary["gpus"][gpu.uuid]
    assert entry["sharing"] == {
        "mode": "mps",
        "replicas": 4,
        "replicas_held": 1,
        "replicas_free": 3,
        "share": 0.25,
    }
    assert entry["whole_free"] is False
    assert "3 of 4 shared replicas" in summary["text"]


def test_share_note_says_time_slicing_has_no_memory_isolation() -> None:
    note = share_note(GpuSharing("time-slicing", 2), 1)
    assert note.startswith("time-sliced GPU: no memory isolation")


@settings(max_examples=150, deadline=None)
@given(
    replicas=st.lists(st.integers(2, 6), min_size=1, max_size=3),
    unshared=st.integers(0, 1),
    steps=st.lists(st.tuples(st.sampled_from(["shared", "whole", "free"]), st.integers(0, 99))),
)
def test_replicas_never_overbook_and_whole_never_takes_a_shared_one(
    replicas: list[int], unshared: int, steps: list[tuple[str, int]]
) -> None:
    devices = [shared(i, replicas=n) for i, n in enumerate(replicas)]
    devices += [device(len(devices) + i, "L4") for i in range(unshared)]
    by_uuid = {d.uuid: d for d in devices}
    claims: list[Claim] = []
    for action, pick in steps:
        if action == "free":
            if claims:
                claims.pop(pick % len(claims))
            continue
        before = list(claims)
        try:
            alloc = take(SHARED if action == "shared" else WHOLE, devices, claims)
        except CapacityExhausted:
            continue
        mine = [c for c in before if c.gpu_uuid == alloc.gpu_uuid]
        if action == "whole":
            assert not mine, "a whole grant took a GPU with replicas or a grant held"
        else:
            assert all(c.replica is not None for c in mine), "a replica of a GPU held whole"
            assert alloc.replica not in {c.replica for c in mine}
        for d in devices:
            held = [c for c in claims if c.gpu_uuid == d.uuid]
            units = [u for c in held for u in claim_units(_as_allocation(c, by_uuid))]
            assert len(units) == len(set(units)), "two grants hold one unit"
            if d.sharing is not None:
                assert sum(c.replica is not None for c in held) <= d.sharing.replicas


def _as_allocation(c: Claim, by_uuid: dict[str, GpuDevice]) -> Allocation:
    sharing = by_uuid[c.gpu_uuid].sharing
    kind = "gpu_share" if c.replica is not None else "whole_gpu"
    return Allocation(
        c.gpu_uuid, kind, None, c.start, c.size, 0, replica=c.replica, sharing=sharing
    )
