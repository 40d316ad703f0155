"""The real inventory: NVIDIA's NVML through ``pynvml`` (PyPI ``nvidia-ml-py``).

NVML is imported lazily so that Sandman installs and runs (with the simulated
backend) where there is no driver; asking for this backend without the library
or the driver is a ``GpuError`` that says which is missing. Every NVML call goes
through ``_call`` so a driver error always reaches the API as readable text.

Whether a MIG-enabled GPU is handed out as pre-made instances (``static``) or
sliced on demand (``dynamic``) is Sandman configuration, not a hardware fact:
``default_mode`` applies to every MIG-enabled GPU, ``modes`` overrides it by UUID.
GPUs with MIG disabled are always ``disabled`` (whole GPUs), and may be shared
(``sharing``: by GPU index or UUID, or ``*`` for every GPU without MIG); naming a
GPU with MIG enabled there is a configuration error.
"""

from __future__ import annotations

import ctypes
import importlib
import threading
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, TypeVar

from sandman.errors import ConfigurationError, GpuError, InvalidRequest, NotFound
from sandman.gpu.catalogue import GpuModel, find_model, validate_layout
from sandman.gpu.catalogue import profile as catalogue_profile
from sandman.gpu.types import GpuDevice, GpuSharing, MigInstance, MigMode

__all__ = ["NvmlInventory", "load_pynvml"]

T = TypeVar("T")

_MIG_ENABLED = 1  # NVML_DEVICE_MIG_ENABLE
_MAX_INSTANCES = 8  # GPU instances per GPU, per profile, never exceed this


def load_pynvml() -> ModuleType:
    """Import ``pynvml`` or explain how to get it."""
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        raise GpuError(
            "the nvml GPU backend needs the nvidia-ml-py package (pip install 'sandman[nvml]')"
        ) from exc


class NvmlInventory:
    """``GpuInventory`` over NVML. ``nvml`` may be injected (tests pass a fake module)."""

    backend = "nvml"
    simulated = False

    def __init__(
        self,
        default_mode: MigMode = MigMode.DYNAMIC,
        modes: Mapping[str, MigMode] | None = None,
        nvml: ModuleType | None = None,
        sharing: Mapping[str, GpuSharing] | None = None,
    ) -> None:
        if default_mode is MigMode.DISABLED:
            raise InvalidRequest("default_mode for MIG-enabled GPUs must be static or dynamic")
        self._nv = nvml if nvml is not None else load_pynvml()
        self._default_mode = default_mode
        self._modes = dict(modes or {})
        self._lock = threading.Lock()
        self._ids: dict[tuple[str, int], int] = {}  # (gpu uuid, -lgip id) -> NVML enum
        self._call("initialise NVML (is the NVIDIA driver loaded?)", self._nv.nvmlInit)
        self._sharing = dict(sharing or {})
        if self._sharing:
            self._check_sharing()

    # ---- helpers -------------------------------------------------------------

    def _check_sharing(self) -> None:
        """Every GPU the sharing setting names exists and has MIG disabled."""
        named = {k for k in self._sharing if k != "*"}
        for index, handle, uuid in self._handles():
            keys = named & {str(index), uuid}
            named -= keys
            if keys and self._mig_state(handle)[0]:
                raise ConfigurationError(
                    f"SANDMAN_GPU_SHARING names GPU {index} ({uuid}), which has MIG enabled; "
                    "a GPU is either sliced by MIG or shared: disable MIG on it "
                    f"(nvidia-smi -i {index} -mig 0) or leave it out of the setting"
                )
        if named:
            raise ConfigurationError(
                f"SANDMAN_GPU_SHARING names GPUs this machine does not have: "
                f"{', '.join(sorted(named))}"
            )

    def _shared(self, index: int, uuid: str) -> GpuSharing | None:
        for key in (uuid, str(index), "*"):
            if key in self._sharing:
                return self._sharing[key]
        return None

    def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except self._nv.NVMLError as exc:
            raise GpuError(f"NVML failed to {what}: {exc}") from exc

    def _text(self, value: object) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    def _optional(self, fn: Callable[..., T], *args: Any, default: T) -> T:
        """Metrics NVML does not report for every GPU (utilisation under MIG...)."""
        try:
            return fn(*args)
        except self._nv.NVMLError:
            return default

    def _handles(self) -> list[tuple[int, Any, str]]:
        nv = self._nv
        count = self._call("count GPUs", nv.nvmlDeviceGetCount)
        out = []
        for i in range(count):
            h = self._call(f"open GPU {i}", nv.nvmlDeviceGetHandleByIndex, i)
            out.append(
                (i, h, self._text(self._call(f"read GPU {i} UUID", nv.nvmlDeviceGetUUID, h)))
            )
        return out

    def _find(self, gpu_uuid: str) -> tuple[int, Any]:
        for index, handle, uuid in self._handles():
            if uuid == gpu_uuid:
                return index, handle
        raise NotFound(f"no GPU {gpu_uuid}")

    def _model(self, handle: Any) -> tuple[str, GpuModel | None]:
        name = self._text(self._call("read GPU name", self._nv.nvmlDeviceGetName, handle))
        return name, find_model(name)

    def _mig_state(self, handle: Any) -> tuple[bool, bool]:
        """(MIG enabled now, a different mode pending until reset)."""
        try:
            current, pending = self._nv.nvmlDeviceGetMigMode(handle)
        except self._nv.NVMLError:
            return False, False  # not MIG-capable
        return current == _MIG_ENABLED, current != pending

    def _profile_enums(self, uuid: str, handle: Any) -> dict[int, int]:
        """Map -lgip profile IDs (19, 14...) to NVML_GPU_INSTANCE_PROFILE_* enum values."""
        cached = {pid: enum for (u, pid), enum in self._ids.items() if u == uuid}
        if cached:
            return cached
        nv = self._nv
        for enum in range(int(nv.NVML_GPU_INSTANCE_PROFILE_COUNT)):
            try:
                info = nv.nvmlDeviceGetGpuInstanceProfileInfo(handle, enum)
            except nv.NVMLError:
                continue  # profile not supported on this GPU
            self._ids[(uuid, int(info.id))] = enum
            cached[int(info.id)] = enum
        return cached

    def _gpu_instances(self, handle: Any, profile_id: int) -> list[Any]:
        nv = self._nv
        array = (nv.c_nvmlGpuInstance_t * _MAX_INSTANCES)()
        count = ctypes.c_uint(0)
        self._call(
            "list GPU instances",
            nv.nvmlDeviceGetGpuInstances,
            handle,
            profile_id,
            array,
            ctypes.byref(count),
        )
        return [array[i] for i in range(count.value)]

    def _compute_instances(self, gi: Any) -> list[Any]:
        nv = self._nv
        found: list[Any] = []
        for ci_profile in range(int(nv.NVML_COMPUTE_INSTANCE_PROFILE_COUNT)):
            array = (nv.c_nvmlComputeInstance_t * _MAX_INSTANCES)()
            count = ctypes.c_uint(0)
            try:
                nv.nvmlGpuInstanceGetComputeInstances(gi, ci_profile, array, ctypes.byref(count))
            except nv.NVMLError:
                continue
            found.extend(array[i] for i in range(count.value))
        return found

    def _mig_uuids(self, handle: Any) -> dict[tuple[int, int], str]:
        """(GPU instance id, compute instance id) -> the MIG device's ``MIG-`` UUID."""
        nv = self._nv
        out: dict[tuple[int, int], str] = {}
        total = self._optional(nv.nvmlDeviceGetMaxMigDeviceCount, handle, default=0)
        for i in range(total):
            try:
                mig = nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, i)
            except nv.NVMLError:
                continue  # an empty MIG device slot
            gi = self._call("read GPU instance id", nv.nvmlDeviceGetGpuInstanceId, mig)
            ci = self._call("read compute instance id", nv.nvmlDeviceGetComputeInstanceId, mig)
            out[(gi, ci)] = self._text(self._call("read MIG UUID", nv.nvmlDeviceGetUUID, mig))
        return out

    def _instances(self, uuid: str, handle: Any, model: GpuModel | None) -> list[MigInstance]:
        nv = self._nv
        uuids = self._mig_uuids(handle)
        found: list[MigInstance] = []
        for profile_id in sorted(self._profile_enums(uuid, handle)):
            for gi in self._gpu_instances(handle, profile_id):
                info = self._call("read GPU instance", nv.nvmlGpuInstanceGetInfo, gi)
                p = model.profile_by_id(int(info.profileId)) if model else None
                name = p.name if p else f"profile-{int(info.profileId)}"
                ci_id = min((k[1] for k in uuids if k[0] == int(info.id)), default=0)
                found.append(
                    MigInstance(
                        uuid=uuids.get((int(info.id), ci_id), ""),
                        profile=name,
                        start=int(info.placement.start),
                        size=int(info.placement.size),
                        memory_mb=p.memory_mib if p else 0,
                        gpu_instance_id=int(info.id),
                        compute_instance_id=ci_id,
                    )
                )
        return sorted(found, key=lambda i: i.start)

    # ---- GpuInventory ---------------------------------------------------------

    def devices(self) -> list[GpuDevice]:
        nv = self._nv
        with self._lock:
            out = []
            for index, handle, uuid in self._handles():
                name, model = self._model(handle)
                enabled, pending = self._mig_state(handle)
                mem = self._call("read memory", nv.nvmlDeviceGetMemoryInfo, handle)
                util = self._optional(nv.nvmlDeviceGetUtilizationRates, handle, default=None)
                temp = self._optional(
                    nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU, default=0
                )
                power = self._optional(nv.nvmlDeviceGetPowerUsage, handle, default=0)
                limit = self._optional(nv.nvmlDeviceGetEnforcedPowerLimit, handle, default=0)
                mode = self._modes.get(uuid, self._default_mode) if enabled else MigMode.DISABLED
                out.append(
                    GpuDevice(
                        index=index,
                        uuid=uuid,
                        name=name,
                        model=model.key if model else name,
                        memory_total_mb=int(mem.total) // (1024 * 1024),
                        memory_used_mb=int(mem.used) // (1024 * 1024),
                        utilization_percent=int(util.gpu) if util is not None else 0,
                        temperature_c=int(temp),
                        power_usage_w=power / 1000.0,
                        power_limit_w=limit / 1000.0,
                        mig_mode=mode,
                        instances=tuple(self._instances(uuid, handle, model)) if enabled else (),
                        mig_pending=pending,
                        sharing=None if enabled else self._shared(index, uuid),
                    )
                )
            return out

    def create_instance(self, gpu_uuid: str, profile: str, start: int) -> MigInstance:
        nv = self._nv
        with self._lock:
            _, handle = self._find(gpu_uuid)
            _, model = self._model(handle)
            enabled, _ = self._mig_state(handle)
            if not enabled or model is None:
                raise InvalidRequest(f"MIG is not enabled on GPU {gpu_uuid}")
            p = catalogue_profile(model, profile)
            existing = self._instances(gpu_uuid, handle, model)
            validate_layout(model, [*((i.profile, i.start) for i in existing), (p.name, start)])
            enum = self._profile_enums(gpu_uuid, handle).get(p.profile_id)
            if enum is None:
                raise GpuError(f"the driver does not offer {p.name} on GPU {gpu_uuid}")
            info = self._call(
                f"read {p.name} profile", nv.nvmlDeviceGetGpuInstanceProfileInfo, handle, enum
            )
            placement = nv.c_nvmlGpuInstancePlacement_t()
            placement.start = start
            placement.size = p.size
            gi = self._call(
                f"create {p.name} at {start}",
                nv.nvmlDeviceCreateGpuInstanceWithPlacement,
                handle,
                info.id,
                placement,
            )
            try:
                ci_info = self._call(
                    "read compute profile",
                    nv.nvmlGpuInstanceGetComputeInstanceProfileInfo,
                    gi,
                    _full_compute_profile(nv, p.compute_slices),
                    nv.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED,
                )
                self._call(
                    "create compute instance",
                    nv.nvmlGpuInstanceCreateComputeInstance,
                    gi,
                    ci_info.id,
                )
            except GpuError:
                self._optional(nv.nvmlGpuInstanceDestroy, gi, default=None)
                raise
            gi_info = self._call("read GPU instance", nv.nvmlGpuInstanceGetInfo, gi)
            for inst in self._instances(gpu_uuid, handle, model):
                if inst.gpu_instance_id == int(gi_info.id):
                    return inst
            raise GpuError(f"created {p.name} on {gpu_uuid} but NVML does not list it")

    def destroy_instance(self, gpu_uuid: str, instance_uuid: str) -> None:
        nv = self._nv
        with self._lock:
            _, handle = self._find(gpu_uuid)
            _, model = self._model(handle)
            target = next(
                (i for i in self._instances(gpu_uuid, handle, model) if i.uuid == instance_uuid),
                None,
            )
            if target is None:
                return  # already gone
            gi = self._call(
                "open GPU instance", nv.nvmlDeviceGetGpuInstanceById, handle, target.gpu_instance_id
            )
            for ci in self._compute_instances(gi):
                self._call("destroy compute instance", nv.nvmlComputeInstanceDestroy, ci)
            self._call("destroy GPU instance", nv.nvmlGpuInstanceDestroy, gi)

    def close(self) -> None:
        self._optional(self._nv.nvmlShutdown, default=None)


def _full_compute_profile(nv: ModuleType, compute_slices: int) -> int:
    """The compute instance profile that spans a whole GPU instance of ``compute_slices``."""
    table = {
        1: nv.NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE,
        2: nv.NVML_COMPUTE_INSTANCE_PROFILE_2_SLICE,
        3: nv.NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE,
        4: nv.NVML_COMPUTE_INSTANCE_PROFILE_4_SLICE,
        6: nv.NVML_COMPUTE_INSTANCE_PROFILE_6_SLICE,
        7: nv.NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE,
        8: nv.NVML_COMPUTE_INSTANCE_PROFILE_8_SLICE,
    }
    return int(table[compute_slices])
