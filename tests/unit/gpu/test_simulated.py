from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from sandman.errors import ConfigurationError, InvalidLayout, InvalidRequest, NotFound
from sandman.gpu.inventory import make_inventory
from sandman.gpu.inventory.simulated import SimulatedInventory
from sandman.gpu.planner import claim_for, plan
from sandman.gpu.types import GpuRequest, MigMode

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def test_uuid_formats_and_stability() -> None:
    inv = SimulatedInventory("a100-40gb-7x1g")
    [gpu] = inv.devices()
    assert re.fullmatch(f"GPU-{UUID}", gpu.uuid)
    assert all(re.fullmatch(f"MIG-{UUID}", i.uuid) for i in gpu.instances)
    assert len({i.uuid for i in gpu.instances}) == 7
    again = SimulatedInventory("a100-40gb-7x1g").devices()[0]
    assert again.uuid == gpu.uuid and again.instances == gpu.instances
    other = SimulatedInventory("a100-40gb-7x1g", seed="other").devices()[0]
    assert other.uuid != gpu.uuid
    assert gpu.simulated and inv.simulated and inv.backend == "simulated"
    assert gpu.mig_mode is MigMode.STATIC and gpu.name == "NVIDIA A100-SXM4-40GB"


def test_metrics_are_plausible_and_move() -> None:
    t = [0.0]
    inv = SimulatedInventory("mixed", clock=lambda: t[0])
    a = inv.devices()
    t[0] = 40.0
    b = inv.devices()
    for d in a + b:
        assert 0 <= d.utilization_percent <= 100
        assert 20 <= d.temperature_c <= 90
        assert 0 < d.power_usage_w <= d.power_limit_w
    assert [d.utilization_percent for d in a] != [d.utilization_percent for d in b] or [
        d.temperature_c for d in a
    ] != [d.temperature_c for d in b]


def test_create_refuses_bad_placements() -> None:
    inv = SimulatedInventory("a100-40gb-x1")
    gpu = inv.devices()[0].uuid
    inst = inv.create_instance(gpu, "3g.20gb", 4)
    assert inst.size == 4 and inst.memory_mb == 19968
    with pytest.raises(InvalidLayout, match="overlaps"):
        inv.create_instance(gpu, "1g.5gb", 5)
    with pytest.raises(InvalidLayout, match="cannot start"):
        inv.create_instance(gpu, "4g.20gb", 4)
    with pytest.raises(InvalidLayout, match="does not exist"):
        inv.create_instance(gpu, "3g.40gb", 0)
    with pytest.raises(NotFound):
        inv.create_instance("GPU-nope", "1g.5gb", 0)
    used = inv.devices()[0].memory_used_mb
    assert used == 19968


def test_disabled_gpu_refuses_instances_static_accepts() -> None:
    inv = SimulatedInventory("mixed")
    rtx = inv.devices()[1]
    with pytest.raises(InvalidRequest):
        inv.create_instance(rtx.uuid, "1g.5gb", 0)
    static = SimulatedInventory("a100-40gb-7x1g")
    gpu = static.devices()[0]
    static.destroy_instance(gpu.uuid, gpu.instances[0].uuid)
    static.create_instance(gpu.uuid, "1g.5gb", 0)


def test_destroy_is_idempotent() -> None:
    inv = SimulatedInventory("a100-40gb-x1")
    gpu = inv.devices()[0].uuid
    inst = inv.create_instance(gpu, "1g.5gb", 6)
    inv.destroy_instance(gpu, inst.uuid)
    inv.destroy_instance(gpu, inst.uuid)
    assert inv.devices()[0].instances == ()


def test_persistence_round_trip(tmp_path: Path) -> None:
    state = tmp_path / "gpu-state.json"
    inv = SimulatedInventory("h100-80gb-x8", state_path=state)
    gpu = inv.devices()[3].uuid
    a = inv.create_instance(gpu, "3g.40gb", 4)
    b = inv.create_instance(gpu, "1g.10gb", 0)
    inv.destroy_instance(gpu, b.uuid)
    restarted = SimulatedInventory("h100-80gb-x8", state_path=state)
    assert restarted.devices()[3].instances == (a,)
    c = restarted.create_instance(gpu, "1g.10gb", 0)
    assert c.uuid not in {a.uuid, b.uuid}  # a new instance gets a new UUID
    assert not list(tmp_path.glob(".gpu-state.json.*"))  # no temp files left


def test_corrupt_state_is_a_configuration_error(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    state.write_text("{not json")
    with pytest.raises(ConfigurationError):
        SimulatedInventory("a100-40gb-x1", state_path=state)


def test_planner_and_inventory_together_under_threads() -> None:
    inv = SimulatedInventory("a100-80gb-x2")
    lock = threading.Lock()
    claims: list = []
    errors: list[Exception] = []

    def worker() -> None:
        try:
            with lock:
                [a] = plan(GpuRequest(mig_profile="1g.10gb"), inv.devices(), claims)
                inst = inv.create_instance(a.gpu_uuid, a.profile or "", a.start)
                claims.append(claim_for(a, inst.uuid))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(14)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(len(d.instances) for d in inv.devices()) == 14


def test_make_inventory() -> None:
    inv = make_inventory("simulated", "mixed", None)
    assert len(inv.devices()) == 2
    with pytest.raises(ConfigurationError):
        make_inventory("simulated", None, None)
    with pytest.raises(ConfigurationError):
        make_inventory("cuda", None, None)
