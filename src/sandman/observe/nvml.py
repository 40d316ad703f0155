"""Samples of real GPUs through NVML (``pynvml``, PyPI ``nvidia-ml-py``).

Per GPU: utilisation and memory copy utilisation (``nvmlDeviceGetUtilizationRates``,
which NVML does not report while MIG is on), frame buffer, temperature, power,
volatile double-bit ECC errors, clock event (throttle) reasons, and the last XID
error (from an NVML event set, drained every pass without waiting).

Per MIG instance: its frame buffer (through its MIG device handle) and its
graphics engine activity. Engine activity comes from GPU Performance Monitoring
(GPM: ``nvmlGpmSampleGet``/``nvmlGpmMigSampleGet`` then ``nvmlGpmMetricsGet`` with
``NVML_GPM_METRIC_GRAPHICS_UTIL``, the share of time any graphics or compute
work ran), which Hopper and later GPUs offer; two samples one collection interval
apart give the activity over that interval. Where a GPU has no GPM (Ampere and
earlier): a whole GPU's activity is its utilisation (``util.gpu``/100, the share
of time a kernel ran), and a MIG instance has none: its
``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` series and its session's
``sandman_session_gpu_active`` are absent rather than guessed (NVML's per-process
utilisation does not work under MIG either), and idle decisions rely on CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from types import ModuleType
from typing import Any, TypeVar

from sandman.gpu.inventory.nvml import load_pynvml
from sandman.gpu.types import GpuDevice
from sandman.observe.samples import GpuSample

__all__ = ["NvmlSampler"]

log = logging.getLogger(__name__)
T = TypeVar("T")
MIB = 1024 * 1024
_XID_EVENT = 0x8  # nvmlEventTypeXidCriticalError


class NvmlSampler:
    """A ``GpuSampler`` over NVML; ``nvml`` may be injected (tests pass a fake module)."""

    def __init__(self, nvml: ModuleType | None = None) -> None:
        self._nv = nvml if nvml is not None else load_pynvml()
        self._nv.nvmlInit()  # reference-counted: the inventory holds its own
        self._gpm_prev: dict[tuple[str, int | None], Any] = {}  # (GPU, GI id) -> sample
        self._gpm_ok: dict[str, bool] = {}
        self._xid: dict[str, int] = {}
        self._events: Any = self._optional(self._nv.nvmlEventSetCreate, default=None)
        self._registered: set[str] = set()

    def _optional(self, fn: Callable[..., T], *args: Any, default: T) -> T:
        try:
            return fn(*args)
        except self._nv.NVMLError:
            return default

    @staticmethod
    def _text(value: object) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    def _handles(self) -> dict[str, Any]:
        nv = self._nv
        found = {}
        for i in range(self._optional(nv.nvmlDeviceGetCount, default=0)):
            handle = self._optional(nv.nvmlDeviceGetHandleByIndex, i, default=None)
            if handle is not None:
                found[self._text(nv.nvmlDeviceGetUUID(handle))] = handle
        return found

    # ---- XID events ----------------------------------------------------------------

    def _watch_xid(self, uuid: str, handle: Any) -> None:
        if self._events is None or uuid in self._registered:
            return
        self._registered.add(uuid)  # once, whether or not the GPU supports it
        self._optional(
            self._nv.nvmlDeviceRegisterEvents, handle, _XID_EVENT, self._events, default=None
        )

    def _drain_xid(self) -> None:
        if self._events is None:
            return
        for _ in range(1000):  # bounded: a storm of errors cannot hold the pass
            data = self._optional(self._nv.nvmlEventSetWait_v2, self._events, 0, default=None)
            if data is None:
                return
            uuid = self._optional(self._nv.nvmlDeviceGetUUID, data.device, default=None)
            if uuid is not None:
                self._xid[self._text(uuid)] = int(data.eventData)

    # ---- GPM -----------------------------------------------------------------------

    def _gpm_supported(self, uuid: str, handle: Any) -> bool:
        if uuid not in self._gpm_ok:
            support = self._optional(self._nv.nvmlGpmQueryDeviceSupport, handle, default=None)
            self._gpm_ok[uuid] = bool(support is not None and support.isSupportedDevice)
        return self._gpm_ok[uuid]

    def _gpm_activity(self, uuid: str, handle: Any, gpu_instance_id: int | None) -> float | None:
        """Graphics activity (0-1) since the last pass's sample; None on the first."""
        nv = self._nv
        key = (uuid, gpu_instance_id)
        sample = self._optional(nv.nvmlGpmSampleAlloc, default=None)
        if sample is None:
            return None
        if gpu_instance_id is None:
            taken = self._optional(nv.nvmlGpmSampleGet, handle, sample, default=None)
        else:
            taken = self._optional(
                nv.nvmlGpmMigSampleGet, handle, gpu_instance_id, sample, default=None
            )
        if taken is None:
            self._optional(nv.nvmlGpmSampleFree, sample, default=None)
            return None
        before = self._gpm_prev.pop(key, None)
        self._gpm_prev[key] = sample
        if before is None:
            return None
        try:
            request = nv.c_nvmlGpmMetricsGet_t()
            request.version = nv.NVML_GPM_METRICS_GET_VERSION
            request.numMetrics = 1
            request.sample1 = before
            request.sample2 = sample
            request.metrics[0].metricId = nv.NVML_GPM_METRIC_GRAPHICS_UTIL
            result = self._optional(nv.nvmlGpmMetricsGet, request, default=None)
        finally:
            self._optional(nv.nvmlGpmSampleFree, before, default=None)
        if result is None or result.metrics[0].nvmlReturn != 0:
            return None
        return max(0.0, min(1.0, float(result.metrics[0].value) / 100.0))

    # ---- a pass --------------------------------------------------------------------

    def __call__(
        self, devices: Sequence[GpuDevice], activity: Mapping[str, float], at: datetime
    ) -> list[GpuSample]:
        nv = self._nv
        handles = self._handles()
        self._drain_xid()
        found: list[GpuSample] = []
        for device in devices:
            handle = handles.get(device.uuid)
            if handle is None:
                continue
            self._watch_xid(device.uuid, handle)
            util = self._optional(nv.nvmlDeviceGetUtilizationRates, handle, default=None)
            mem = self._optional(nv.nvmlDeviceGetMemoryInfo, handle, default=None)
            pci = self._optional(nv.nvmlDeviceGetPciInfo, handle, default=None)
            temp = self._optional(
                nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU, default=None
            )
            power = self._optional(nv.nvmlDeviceGetPowerUsage, handle, default=None)
            ecc = self._optional(
                nv.nvmlDeviceGetTotalEccErrors,
                handle,
                nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                nv.NVML_VOLATILE_ECC,
                default=0,
            )
            reasons = self._optional(
                nv.nvmlDeviceGetCurrentClocksThrottleReasons, handle, default=0
            )
            gpm = self._gpm_supported(device.uuid, handle)
            active = self._gpm_activity(device.uuid, handle, None) if gpm else None
            if active is None and not gpm and util is not None:
                active = int(util.gpu) / 100.0
            gpu = GpuSample(
                uuid=device.uuid,
                parent_uuid=None,
                index=device.index,
                model=device.name,
                mig_profile=None,
                gpu_instance_id=None,
                util_percent=float(util.gpu) if util is not None else None,
                mem_copy_util_percent=float(util.memory) if util is not None else None,
                fb_used_mib=int(mem.used) / MIB if mem is not None else 0.0,
                fb_free_mib=int(mem.free) / MIB if mem is not None else 0.0,
                temperature_c=float(temp) if temp is not None else None,
                power_w=power / 1000.0 if power is not None else None,
                xid=self._xid.get(device.uuid, 0),
                ecc_dbe=int(ecc),
                throttle_reasons=int(reasons),
                gr_engine_active=active,
                at=at,
                pci_bus_id=self._text(pci.busId) if pci is not None else None,
            )
            found.append(gpu)
            found.extend(self._instances(device, handle, gpm, gpu))
        return found

    def _instances(
        self, device: GpuDevice, handle: Any, gpm: bool, gpu: GpuSample
    ) -> list[GpuSample]:
        nv = self._nv
        memory: dict[int, Any] = {}  # GPU instance id -> its MIG device's memory
        for i in range(self._optional(nv.nvmlDeviceGetMaxMigDeviceCount, handle, default=0)):
            mig = self._optional(nv.nvmlDeviceGetMigDeviceHandleByIndex, handle, i, default=None)
            if mig is None:
                continue
            gi = self._optional(nv.nvmlDeviceGetGpuInstanceId, mig, default=None)
            if gi is not None:
                memory[int(gi)] = self._optional(nv.nvmlDeviceGetMemoryInfo, mig, default=None)
        found = []
        for inst in device.instances:
            mem = memory.get(inst.gpu_instance_id)
            used = int(mem.used) / MIB if mem is not None else 0.0
            found.append(
                replace(
                    gpu,
                    uuid=inst.uuid,
                    parent_uuid=device.uuid,
                    mig_profile=inst.profile,
                    gpu_instance_id=inst.gpu_instance_id,
                    util_percent=None,
                    mem_copy_util_percent=None,
                    fb_used_mib=used,
                    fb_free_mib=int(mem.free) / MIB if mem is not None else inst.memory_mb - used,
                    temperature_c=None,
                    power_w=None,
                    xid=0,
                    ecc_dbe=0,
                    throttle_reasons=0,
                    gr_engine_active=(
                        self._gpm_activity(device.uuid, handle, inst.gpu_instance_id)
                        if gpm
                        else None
                    ),
                )
            )
        return found

    def close(self) -> None:
        nv = self._nv
        for sample in self._gpm_prev.values():
            self._optional(nv.nvmlGpmSampleFree, sample, default=None)
        self._gpm_prev.clear()
        if self._events is not None:
            self._optional(nv.nvmlEventSetFree, self._events, default=None)
        self._optional(nv.nvmlShutdown, default=None)
