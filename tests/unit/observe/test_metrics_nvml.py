"""The NVML sampler against a small fake ``pynvml``: a Hopper GPU in MIG mode with
GPM (per-instance activity), an Ampere GPU without (utilisation stands in), and
an XID event."""

from __future__ import annotations

from datetime import UTC, datetime
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from sandman.gpu.types import GpuDevice, MigInstance, MigMode
from sandman.observe.nvml import NvmlSampler

AT = datetime(2026, 5, 1, tzinfo=UTC)
MIB = 1024 * 1024
H100, A100 = "GPU-hhhhhhhh-0000-0000-0000-000000000000", "GPU-aaaaaaaa-0000-0000-0000-000000000000"


class NVMLError(Exception):
    pass


def _device(index: int, uuid: str, name: str, mig: MigMode, *instances: MigInstance) -> GpuDevice:
    return GpuDevice(
        index=index, uuid=uuid, name=name, model=name, memory_total_mb=81920, memory_used_mb=0,
        utilization_percent=0, temperature_c=0, power_usage_w=0, power_limit_w=700,
        mig_mode=mig, instances=instances,
    )  # fmt: skip


def fake_pynvml() -> Any:
    nv: Any = ModuleType("pynvml")
    nv.NVMLError = NVMLError
    nv.NVML_TEMPERATURE_GPU = 0
    nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
    nv.NVML_VOLATILE_ECC = 0
    nv.NVML_GPM_METRICS_GET_VERSION = 1
    nv.NVML_GPM_METRIC_GRAPHICS_UTIL = 1
    gpus = {
        "h": {"uuid": H100, "gpm": True, "mig": {3: ("MIG-3", 4000), 5: ("MIG-5", 100)}},
        "a": {"uuid": A100, "gpm": False, "mig": {}},
    }
    # Cumulative busy time per (GPU, GI) for GPM: the metric is the busy share between samples.
    nv.busy = {("h", None): 0.0, ("h", 3): 0.0, ("h", 5): 0.0}
    nv.freed = []
    nv.events = []
    nv.nvmlInit = lambda: None
    nv.nvmlShutdown = lambda: None
    nv.nvmlDeviceGetCount = lambda: 2
    nv.nvmlDeviceGetHandleByIndex = lambda i: ["h", "a"][i]
    nv.nvmlDeviceGetUUID = lambda h: gpus[h]["uuid"].encode() if h in gpus else f"MIG-{h}".encode()

    def util(h: str) -> Any:
        if h == "h":
            raise NVMLError("Not Supported")  # MIG mode
        return SimpleNamespace(gpu=37, memory=12)

    nv.nvmlDeviceGetUtilizationRates = util

    def memory(h: Any) -> Any:
        if isinstance(h, tuple):  # a MIG device handle: (gpu, gi)
            used = gpus[h[0]]["mig"][h[1]][1]
            return SimpleNamespace(used=used * MIB, free=(9856 - used) * MIB)
        return SimpleNamespace(used=5000 * MIB, free=76000 * MIB)

    nv.nvmlDeviceGetMemoryInfo = memory
    nv.nvmlDeviceGetPciInfo = lambda h: SimpleNamespace(busId=b"00000000:18:00.0")
    nv.nvmlDeviceGetTemperature = lambda h, sensor: 55
    nv.nvmlDeviceGetPowerUsage = lambda h: 312_500  # mW
    nv.nvmlDeviceGetTotalEccErrors = lambda h, kind, counter: 3 if h == "a" else 0
    nv.nvmlDeviceGetCurrentClocksThrottleReasons = lambda h: 0x4
    nv.nvmlDeviceGetMaxMigDeviceCount = lambda h: 7 if h == "h" else 0

    def mig_handle(h: str, i: int) -> Any:
        ids = sorted(gpus[h]["mig"])
        if i >= len(ids):
            raise NVMLError("Not Found")
        return (h, ids[i])

    nv.nvmlDeviceGetMigDeviceHandleByIndex = mig_handle
    nv.nvmlDeviceGetGpuInstanceId = lambda m: m[1]
    nv.nvmlGpmQueryDeviceSupport = lambda h: SimpleNamespace(isSupportedDevice=int(gpus[h]["gpm"]))
    nv.clock = [0.0]
    nv.nvmlGpmSampleAlloc = lambda: {}
    nv.nvmlGpmSampleFree = lambda s: nv.freed.append(s)

    def take(h: str, gi: int | None, sample: dict[str, Any]) -> dict[str, Any]:
        sample.update(at=nv.clock[0], busy=nv.busy[(h, gi)])
        return sample

    nv.nvmlGpmSampleGet = lambda h, s: take(h, None, s)
    nv.nvmlGpmMigSampleGet = lambda h, gi, s: take(h, gi, s)

    class Metric:
        def __init__(self) -> None:
            self.metricId = 0
            self.nvmlReturn = 0
            self.value = 0.0

    class MetricsGet:
        def __init__(self) -> None:
            self.version = self.numMetrics = 0
            self.sample1: dict[str, Any] = {}
            self.sample2: dict[str, Any] = {}
            self.metrics = [Metric()]

    nv.c_nvmlGpmMetricsGet_t = MetricsGet

    def metrics_get(request: MetricsGet) -> MetricsGet:
        a, b = request.sample1, request.sample2
        assert request.metrics[0].metricId == nv.NVML_GPM_METRIC_GRAPHICS_UTIL
        request.metrics[0].value = 100.0 * (b["busy"] - a["busy"]) / (b["at"] - a["at"])
        return request

    nv.nvmlGpmMetricsGet = metrics_get
    nv.nvmlEventSetCreate = lambda: "events"
    nv.nvmlEventSetFree = lambda s: None
    nv.registered = []
    nv.nvmlDeviceRegisterEvents = lambda h, kinds, s: nv.registered.append((h, kinds))

    def wait(s: str, timeout: int) -> Any:
        assert timeout == 0  # never blocks the pass
        if not nv.events:
            raise NVMLError("Timeout")
        return nv.events.pop(0)

    nv.nvmlEventSetWait_v2 = wait
    return nv


DEVICES = [
    _device(
        0, H100, "NVIDIA H100 80GB HBM3", MigMode.STATIC,
        MigInstance("MIG-3", "1g.10gb", 0, 1, 9856, gpu_instance_id=3),
        MigInstance("MIG-5", "1g.10gb", 1, 1, 9856, gpu_instance_id=5),
    ),
    _device(1, A100, "NVIDIA A100-SXM4-80GB", MigMode.DISABLED),
]  # fmt: skip


def test_gpm_gives_per_instance_activity_between_passes() -> None:
    nv = fake_pynvml()
    sampler = NvmlSampler(nvml=nv)
    first = {s.uuid: s for s in sampler(DEVICES, {}, AT)}
    assert first["MIG-3"].gr_engine_active is None  # one sample: no interval yet
    nv.clock[0] = 15.0
    nv.busy.update({("h", None): 3.0, ("h", 3): 12.0, ("h", 5): 0.0})
    second = {s.uuid: s for s in sampler(DEVICES, {}, AT)}
    assert second["MIG-3"].gr_engine_active == pytest.approx(0.8)
    assert second["MIG-5"].gr_engine_active == 0.0
    assert second[H100].gr_engine_active == pytest.approx(0.2)
    assert second["MIG-3"].parent_uuid == H100 and second["MIG-3"].gpu_instance_id == 3
    assert second["MIG-3"].fb_used_mib == 4000 and second["MIG-3"].fb_free_mib == 5856
    assert second[H100].util_percent is None  # NVML has none under MIG
    assert (second[H100].temperature_c, second[H100].power_w) == (55.0, 312.5)
    assert second[H100].pci_bus_id == "00000000:18:00.0"
    assert len(nv.freed) == 3  # each earlier sample is freed once used
    sampler.close()


def test_without_gpm_utilisation_stands_in_for_a_whole_gpu() -> None:
    nv = fake_pynvml()
    samples = {s.uuid: s for s in NvmlSampler(nvml=nv)(DEVICES, {}, AT)}
    a100 = samples[A100]
    assert (a100.util_percent, a100.mem_copy_util_percent) == (37.0, 12.0)
    assert a100.gr_engine_active == 0.37
    assert (a100.ecc_dbe, a100.throttle_reasons) == (3, 0x4)
    assert (a100.fb_used_mib, a100.fb_free_mib) == (5000.0, 76000.0)


def test_the_last_xid_error_is_kept_per_gpu() -> None:
    nv = fake_pynvml()
    sampler = NvmlSampler(nvml=nv)
    sampler(DEVICES, {}, AT)
    assert {h for h, _ in nv.registered} == {"h", "a"}
    nv.events = [
        SimpleNamespace(device="a", eventData=13),
        SimpleNamespace(device="a", eventData=79),
    ]
    nv.clock[0] = 15.0
    samples = {s.uuid: s for s in sampler(DEVICES, {}, AT)}
    assert samples[A100].xid == 79 and samples[H100].xid == 0
    assert {h for h, _ in nv.registered} == {"h", "a"}  # registered once
