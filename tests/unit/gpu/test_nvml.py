"""NvmlInventory against a small fake ``pynvml`` module (one A100-40GB, one RTX 4090)."""

from __future__ import annotations

import ctypes
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from sandman.errors import GpuError, InvalidLayout, InvalidRequest, NotFound
from sandman.gpu.inventory.nvml import NvmlInventory
from sandman.gpu.types import MigMode

# NVML_GPU_INSTANCE_PROFILE_* enum -> (-lgip id, slice count) on an A100-40GB
A100_ENUMS = {0: (19, 1), 7: (20, 1), 9: (15, 2), 1: (14, 2), 2: (9, 4), 3: (5, 4), 4: (0, 8)}


class NVMLError(Exception):
    pass


class Placement(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint), ("size", ctypes.c_uint)]


def fake_pynvml(fail_init: bool = False) -> Any:
    nv: Any = ModuleType("pynvml")
    state: dict[str, Any] = {"gis": {}, "next_ci": 500, "destroyed": []}
    gpus = [
        {
            "name": "NVIDIA A100-SXM4-40GB",
            "uuid": "GPU-aaaaaaaa-0000-0000-0000-000000000000",
            "mig": 1,
        },
        {
            "name": "NVIDIA GeForce RTX 4090",
            "uuid": "GPU-bbbbbbbb-0000-0000-0000-000000000000",
            "mig": None,
        },
    ]
    nv.NVMLError = NVMLError
    nv.NVML_TEMPERATURE_GPU = 0
    nv.NVML_GPU_INSTANCE_PROFILE_COUNT = 0x12
    nv.NVML_COMPUTE_INSTANCE_PROFILE_COUNT = 9
    nv.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED = 0
    for n, v in {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 6: 6}.items():
        setattr(nv, f"NVML_COMPUTE_INSTANCE_PROFILE_{n}_SLICE", v)
    nv.c_nvmlGpuInstance_t = ctypes.c_void_p
    nv.c_nvmlComputeInstance_t = ctypes.c_void_p
    nv.c_nvmlGpuInstancePlacement_t = Placement
    nv.state = state

    def init() -> None:
        if fail_init:
            raise NVMLError("Driver Not Loaded")

    nv.nvmlInit = init
    nv.nvmlShutdown = lambda: None
    nv.nvmlDeviceGetCount = lambda: len(gpus)
    nv.nvmlDeviceGetHandleByIndex = lambda i: i
    nv.nvmlDeviceGetUUID = lambda h: (
        gpus[h]["uuid"].encode()
        if isinstance(h, int)
        else f"MIG-{h[1]:08x}-1111-2222-3333-444444444444"
    )
    nv.nvmlDeviceGetName = lambda h: gpus[h]["name"]

    def mig_mode(h: int) -> list[int]:
        if gpus[h]["mig"] is None:
            raise NVMLError("Not Supported")
        return [gpus[h]["mig"], gpus[h]["mig"]]

    nv.nvmlDeviceGetMigMode = mig_mode
    nv.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(total=40960 * 2**20, used=1024 * 2**20)

    def util(h: int) -> Any:
        if gpus[h]["mig"]:
            raise NVMLError("Not Supported")
        return SimpleNamespace(gpu=37)

    nv.nvmlDeviceGetUtilizationRates = util
    nv.nvmlDeviceGetTemperature = lambda h, sensor: 41
    nv.nvmlDeviceGetPowerUsage = lambda h: 61_500
    nv.nvmlDeviceGetEnforcedPowerLimit = lambda h: 400_000

    def profile_info(h: int, enum: int) -> Any:
        if h != 0 or enum not in A100_ENUMS:
            raise NVMLError("Not Supported")
        pid, _ = A100_ENUMS[enum]
        return SimpleNamespace(id=pid)

    nv.nvmlDeviceGetGpuInstanceProfileInfo = profile_info

    def get_gis(h: int, profile_id: int, array: Any, count: Any) -> int:
        mine = [gid for gid, gi in sorted(state["gis"].items()) if gi["profile"] == profile_id]
        for i, gid in enumerate(mine):
            array[i] = gid
        count._obj.value = len(mine)
        return 0

    nv.nvmlDeviceGetGpuInstances = get_gis

    def gi_info(gid: int) -> Any:
        gi = state["gis"][gid]
        return SimpleNamespace(
            id=gid,
            profileId=gi["profile"],
            placement=SimpleNamespace(start=gi["start"], size=gi["size"]),
        )

    nv.nvmlGpuInstanceGetInfo = gi_info
    nv.nvmlDeviceGetMaxMigDeviceCount = lambda h: 7 if h == 0 else 0

    def mig_handle(h: int, i: int) -> Any:
        with_ci = [gid for gid, gi in sorted(state["gis"].items()) if gi["cis"]]
        if i >= len(with_ci):
            raise NVMLError("Not Found")
        return ("mig", with_ci[i])

    nv.nvmlDeviceGetMigDeviceHandleByIndex = mig_handle
    nv.nvmlDeviceGetGpuInstanceId = lambda m: m[1]
    nv.nvmlDeviceGetComputeInstanceId = lambda m: 0

    def create_gi(h: int, profile_id: int, placement: Placement) -> int:
        size = {pid: s for pid, s in A100_ENUMS.values()}[profile_id]
        if placement.size != size:
            raise NVMLError("Invalid Argument")
        gid = max(state["gis"], default=0) + 1
        state["gis"][gid] = {
            "profile": profile_id,
            "start": placement.start,
            "size": size,
            "cis": [],
        }
        return gid

    nv.nvmlDeviceCreateGpuInstanceWithPlacement = create_gi
    nv.nvmlGpuInstanceGetComputeInstanceProfileInfo = lambda gi, p, e: SimpleNamespace(id=p)

    def create_ci(gid: int, ci_profile: int) -> int:
        state["next_ci"] += 1
        state["gis"][gid]["cis"].append(state["next_ci"])
        return state["next_ci"]

    nv.nvmlGpuInstanceCreateComputeInstance = create_ci
    nv.nvmlDeviceGetGpuInstanceById = lambda h, gid: gid

    def get_cis(gid: int, ci_profile: int, array: Any, count: Any) -> int:
        cis = state["gis"][gid]["cis"] if ci_profile == 0 else []
        for i, c in enumerate(cis):
            array[i] = c
        count._obj.value = len(cis)
        return 0

    nv.nvmlGpuInstanceGetComputeInstances = get_cis

    def destroy_ci(ci: int) -> int:
        for gi in state["gis"].values():
            if ci in gi["cis"]:
                gi["cis"].remove(ci)
        state["destroyed"].append(("ci", ci))
        return 0

    def destroy_gi(gid: int) -> int:
        if state["gis"][gid]["cis"]:
            raise NVMLError("In use by another client")
        del state["gis"][gid]
        state["destroyed"].append(("gi", gid))
        return 0

    nv.nvmlComputeInstanceDestroy = destroy_ci
    nv.nvmlGpuInstanceDestroy = destroy_gi
    return nv


def test_devices_map_names_modes_and_metrics() -> None:
    nv = fake_pynvml()
    inv = NvmlInventory(nvml=nv)
    a100, rtx = inv.devices()
    assert a100.model == "A100-40GB" and a100.mig_mode is MigMode.DYNAMIC
    assert a100.uuid.startswith("GPU-") and a100.utilization_percent == 0
    assert rtx.model == "RTX-4090" and rtx.mig_mode is MigMode.DISABLED
    assert rtx.utilization_percent == 37 and rtx.power_usage_w == 61.5
    assert rtx.power_limit_w == 400.0 and rtx.memory_total_mb == 40960
    assert not inv.simulated and inv.backend == "nvml"


def test_per_uuid_mode_override() -> None:
    nv = fake_pynvml()
    uuid = "GPU-aaaaaaaa-0000-0000-0000-000000000000"
    inv = NvmlInventory(default_mode=MigMode.DYNAMIC, modes={uuid: MigMode.STATIC}, nvml=nv)
    assert inv.devices()[0].mig_mode is MigMode.STATIC


def test_create_list_destroy() -> None:
    nv = fake_pynvml()
    inv = NvmlInventory(nvml=nv)
    gpu = inv.devices()[0].uuid
    inst = inv.create_instance(gpu, "3g.20gb", 4)
    assert inst.profile == "3g.20gb" and inst.start == 4 and inst.size == 4
    assert inst.uuid.startswith("MIG-") and inst.memory_mb == 19968
    small = inv.create_instance(gpu, "1g.5gb", 0)
    listed = inv.devices()[0].instances
    assert [(i.profile, i.start) for i in listed] == [("1g.5gb", 0), ("3g.20gb", 4)]
    with pytest.raises(InvalidLayout):
        inv.create_instance(gpu, "4g.20gb", 0)  # overlaps the 1g at 0
    inv.destroy_instance(gpu, small.uuid)
    assert ("ci", 502) in nv.state["destroyed"] and nv.state["destroyed"][-1][0] == "gi"
    inv.destroy_instance(gpu, small.uuid)  # already gone: success
    assert [i.profile for i in inv.devices()[0].instances] == ["3g.20gb"]


def test_errors_are_readable() -> None:
    with pytest.raises(GpuError, match="Driver Not Loaded"):
        NvmlInventory(nvml=fake_pynvml(fail_init=True))
    inv = NvmlInventory(nvml=fake_pynvml())
    rtx = inv.devices()[1].uuid
    with pytest.raises(InvalidRequest):
        inv.create_instance(rtx, "1g.5gb", 0)
    with pytest.raises(NotFound):
        inv.create_instance("GPU-missing", "1g.5gb", 0)
    with pytest.raises(InvalidRequest):
        NvmlInventory(default_mode=MigMode.DISABLED, nvml=fake_pynvml())


def test_missing_library_is_a_gpu_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from sandman.gpu.inventory import nvml as nvml_module

    def missing(name: str) -> ModuleType:
        raise ImportError(name)

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(GpuError, match="nvidia-ml-py"):
        nvml_module.load_pynvml()
