"""What the collector measures, as plain values with no I/O.

A ``GpuSample`` is one GPU, or one MIG instance of a GPU, at one moment; a
``SessionActivity`` is what one session did over the last interval. A
``MetricsSnapshot`` holds one collection pass of both, and is what every reader
gets: ``/metrics`` renders it, the history averages it, idle decisions read a
session's activity from it. Readers never trigger a measurement, so none of
them waits on NVML or the container engine.

Units follow NVIDIA's dcgm-exporter, so dashboards written for it work: percent
for utilisations, MiB for frame buffer, degrees Celsius, watts, and 0-1 for
engine activity. ``None`` means "not reported" (a value the hardware does not
offer for that device, such as temperature of a MIG instance), never zero.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

__all__ = [
    "ActivitySource",
    "GpuSample",
    "HeldDevice",
    "MetricsSnapshot",
    "SessionActivity",
    "SessionGpuReader",
    "SessionInfo",
]


@dataclass(frozen=True)
class GpuSample:
    """One GPU or one MIG instance, as measured at ``at``.

    For a MIG instance ``uuid`` is the instance's ``MIG-`` UUID and ``parent_uuid``
    its GPU's ``GPU-`` UUID; for a whole GPU ``parent_uuid`` is None and
    ``mig_profile``/``gpu_instance_id`` are None too.
    """

    uuid: str
    parent_uuid: str | None
    index: int  # the physical GPU's index (nvidia-smi's, /dev/nvidia<index>)
    model: str  # as nvidia-smi prints it: "NVIDIA H100 80GB HBM3"
    mig_profile: str | None  # "1g.10gb"
    gpu_instance_id: int | None  # GPU_I_ID, the GPU instance's id on its GPU
    util_percent: float | None  # GPU utilisation, 0-100 (whole GPUs only)
    mem_copy_util_percent: float | None  # memory copy utilisation, 0-100
    fb_used_mib: float
    fb_free_mib: float
    temperature_c: float | None
    power_w: float | None
    xid: int = 0  # the last XID error seen, 0 for none
    ecc_dbe: int = 0  # volatile double-bit ECC errors
    throttle_reasons: int = 0  # NVML clock throttle (event) reason bit mask
    gr_engine_active: float | None = None  # graphics/compute engine activity, 0-1
    at: datetime | None = None
    simulated: bool = False
    pci_bus_id: str | None = None  # "00000000:18:00.0", the physical GPU's

    @property
    def gpu_uuid(self) -> str:
        """The physical GPU's UUID, whether this is a GPU or one of its instances."""
        return self.parent_uuid or self.uuid

    @property
    def is_mig(self) -> bool:
        return self.parent_uuid is not None


@dataclass(frozen=True)
class SessionActivity:
    """What one session did over the last collection interval.

    ``gpu_active`` is the activity of the GPU or MIG instance the session holds
    (0-1; the mean over its devices), None when the session holds no GPU or the
    hardware reports no per-instance activity. ``cpu_percent`` is in percent of
    one core (200 = two cores busy), None when the engine gave no figure.
    ``gpu_unknown`` says why the activity of the GPU it holds could not be read
    where only an outside source sees it (Kubernetes: no source set, the query
    failed, no series for its pod); idle decisions then keep the session.
    """

    session_id: str
    gpu_active: float | None
    cpu_percent: float | None
    at: datetime
    gpu_unknown: str | None = None


# Session GPU activity read per session rather than per device (Kubernetes, where the
# kubelet picks the device): session id -> its pod's name in; session id -> activity
# (0-1) or, as text, why it is unknown out. A session left out of the answer is unknown.
SessionGpuReader = Callable[[Mapping[str, str]], Mapping[str, float | str]]


@dataclass(frozen=True)
class HeldDevice:
    """One device a session holds, named the way GPU series name it.

    ``uuid`` is what the container sees (a ``MIG-`` or ``GPU-`` UUID); ``gpu_uuid``
    the physical GPU and ``gpu_instance_id`` its GPU instance (None for a whole
    GPU), which is how dcgm-exporter labels a MIG instance's series (``UUID``,
    ``GPU_I_ID``), so the two join on those labels.
    """

    uuid: str
    gpu_uuid: str
    gpu_instance_id: int | None = None
    mig_profile: str | None = None


@dataclass(frozen=True)
class SessionInfo:
    """Who holds what: an active session with its owner, charge and devices."""

    session_id: str
    user_id: str
    status: str
    image: str
    team: str | None = None
    project: str | None = None
    devices: tuple[HeldDevice, ...] = ()


@dataclass(frozen=True)
class MetricsSnapshot:
    """One collection pass: every GPU sample, every active session with its activity,
    and the counts that need the database (so ``/metrics`` never reads it)."""

    at: datetime
    gpus: tuple[GpuSample, ...] = ()
    sessions: Mapping[str, SessionActivity] = field(default_factory=dict)
    collect_seconds: float = 0.0  # how long the pass took
    holders: tuple[SessionInfo, ...] = ()
    sessions_by_status: Mapping[str, int] = field(default_factory=dict)
    mig_allocation: Mapping[str, float] = field(default_factory=dict)  # profile -> 0-1


class ActivitySource(Protocol):
    """What readers of measurements need (the collector provides it; tests fake it)."""

    def latest(self) -> MetricsSnapshot | None:
        """The last completed pass; None before the first one."""
        ...

    def activity(self, session_id: str) -> SessionActivity | None:
        """The session's activity in the last pass; None when it was not measured."""
        ...
