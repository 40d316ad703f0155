"""The cluster's GPUs as the planner sees them: nodes' advertised resources, less
what other pods request."""

from __future__ import annotations

from typing import Any

import pytest

from sandman.errors import CapacityExhausted, InvalidLayout, InvalidRequest, RuntimeUnavailable
from sandman.gpu.inventory.kubernetes import (
    KubernetesInventory,
    devices_from_nodes,
    instance_uuid,
    node_of,
    pool_uuid,
    requested,
)
from sandman.gpu.planner import plan
from sandman.gpu.types import Claim, GpuRequest, MigMode


def node(
    name: str,
    allocatable: dict[str, str],
    *,
    ready: bool = True,
    unschedulable: bool = False,
    product: str = "NVIDIA-A100-SXM4-40GB",
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product}},
        "spec": {"unschedulable": unschedulable},
        "status": {
            "allocatable": {"cpu": "16", "memory": "64Gi", **allocatable},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def pod(
    node_name: str, limits: dict[str, str], *, managed: bool = False, phase: str = "Running"
) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"sandman.managed": "true"} if managed else {}},
        "spec": {"nodeName": node_name, "containers": [{"resources": {"limits": limits}}]},
        "status": {"phase": phase},
    }


def test_a_mixed_strategy_node_is_a_static_pool_of_its_advertised_instances() -> None:
    devices = devices_from_nodes([node("gpu-1", {"nvidia.com/mig-1g.5gb": "7"})])
    assert len(devices) == 1
    pool = devices[0]
    assert pool.uuid == pool_uuid("gpu-1")
    assert pool.mig_mode is MigMode.STATIC
    assert pool.model == "A100-40GB"
    assert [i.profile for i in pool.instances] == ["1g.5gb"] * 7
    assert len({i.uuid for i in pool.instances}) == 7
    assert pool.instances[0].uuid == instance_uuid("gpu-1", "1g.5gb", 0)
    assert node_of(pool.name) == "gpu-1"


def test_whole_gpus_are_one_device_each_and_ids_are_stable() -> None:
    nodes = [node("b", {"nvidia.com/gpu": "2"}), node("a", {"nvidia.com/mig-3g.20gb": "2"})]
    first = devices_from_nodes(nodes)
    again = devices_from_nodes(list(reversed(nodes)))
    assert [d.uuid for d in first] == [d.uuid for d in again]
    assert [d.mig_mode for d in first] == [MigMode.STATIC, MigMode.DISABLED, MigMode.DISABLED]
    assert [d.index for d in first] == [0, 1, 2]


def test_foreign_pods_take_units_away_and_sandmans_own_do_not() -> None:
    nodes = [node("gpu-1", {"nvidia.com/mig-1g.5gb": "7", "nvidia.com/gpu": "1"})]
    pods = [
        pod("gpu-1", {"nvidia.com/mig-1g.5gb": "2"}),
        pod("gpu-1", {"nvidia.com/mig-1g.5gb": "3"}, managed=True),  # claims in the database
        pod("gpu-1", {"nvidia.com/gpu": "1"}, phase="Succeeded"),  # holds nothing
    ]
    assert requested(pods) == {"gpu-1": {"nvidia.com/mig-1g.5gb": 2}}
    devices = devices_from_nodes(nodes, pods)
    assert len(devices[0].instances) == 5
    assert devices[1].mig_mode is MigMode.DISABLED


@pytest.mark.parametrize("bad", [{"ready": False}, {"unschedulable": True}])
def test_nodes_not_ready_or_cordoned_offer_nothing(bad: dict[str, bool]) -> None:
    assert devices_from_nodes([node("gpu-1", {"nvidia.com/mig-1g.5gb": "7"}, **bad)]) == []


def test_garbage_quantities_count_as_none() -> None:
    devices = devices_from_nodes([node("gpu-1", {"nvidia.com/mig-1g.5gb": "lots"})])
    assert devices == []


def test_the_planner_hands_out_advertised_instances_and_refuses_what_no_node_has() -> None:
    devices = devices_from_nodes([node("gpu-1", {"nvidia.com/mig-1g.5gb": "7"})])
    grant = plan(GpuRequest(mig_profile="1g.5gb"), devices, [])
    assert grant[0].instance_uuid in {i.uuid for i in devices[0].instances}
    # an A100 could be laid out with 3g.20gb, but no node advertises one: no wait helps
    with pytest.raises(InvalidRequest) as refused:
        plan(GpuRequest(mig_profile="3g.20gb"), devices, [])
    assert "3g.20gb" in refused.value.message
    # one merely in use is a capacity matter, as on Docker
    claims = [
        Claim(devices[0].uuid, i.start, i.size, i.profile, i.uuid) for i in devices[0].instances
    ]
    with pytest.raises(CapacityExhausted):
        plan(GpuRequest(mig_profile="1g.5gb"), devices, claims, allow_fallback=False)


def test_the_inventory_caches_briefly_and_never_makes_instances() -> None:
    reads: list[int] = []
    now = [0.0]

    def read() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        reads.append(1)
        return [node("gpu-1", {"nvidia.com/mig-1g.5gb": "1"})], []

    inventory = KubernetesInventory(read, max_age=2.0, clock=lambda: now[0])
    inventory.devices()
    inventory.devices()
    now[0] = 3.0
    inventory.devices()
    assert len(reads) == 2
    with pytest.raises(InvalidLayout, match="MIG manager"):
        inventory.create_instance("x", "1g.5gb", 0)


def test_a_failing_read_is_the_runtime_unavailable() -> None:
    def read() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        raise ConnectionError("refused")

    with pytest.raises(RuntimeUnavailable, match="refused"):
        KubernetesInventory(read).devices()
