"""The GPU subsystem's contract with the rest of Sandman.

Everything outside ``sandman.gpu`` talks to GPUs through these types: an
inventory (``GpuInventory``) reports devices and creates/destroys MIG
instances; the planner turns a ``GpuRequest`` plus what is already claimed into
``Allocation``s. No I/O happens in this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

SharingMode = Literal["time-slicing", "mps"]
MAX_REPLICAS = 48  # MPS serves at most 48 clients per GPU (Volta and later)


@dataclass(frozen=True)
class GpuSharing:
    """A GPU without MIG handed out to up to ``replicas`` sessions at once.

    ``time-slicing``: the sessions take turns on the whole GPU; nothing isolates their
    memory. ``mps``: NVIDIA's Multi-Process Service runs them side by side, each
    limited to its share of the GPU's threads and memory.
    """

    mode: SharingMode
    replicas: int

    @property
    def share(self) -> float:
        """What one replica counts, as a fraction of the GPU (4 replicas: 0.25)."""
        return 1 / self.replicas


class MigMode(StrEnum):
    """How Sandman hands out a GPU.

    ``static``: only MIG instances that already exist are handed out.
    ``dynamic``: instances are created on demand and destroyed on release.
    ``disabled``: the GPU is handed out whole.
    """

    STATIC = "static"
    DYNAMIC = "dynamic"
    DISABLED = "disabled"


@dataclass(frozen=True)
class MigInstance:
    """A GPU instance (with its one compute instance) that exists on a device."""

    uuid: str  # "MIG-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
    profile: str  # "1g.5gb"
    start: int  # first memory slice of its placement
    size: int  # memory slices it spans
    memory_mb: int
    gpu_instance_id: int = 0
    compute_instance_id: int = 0


@dataclass(frozen=True)
class GpuDevice:
    """One physical GPU as the inventory sees it now."""

    index: int
    uuid: str  # "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
    name: str  # as nvidia-smi prints it, e.g. "NVIDIA A100-SXM4-40GB"
    model: str  # catalogue key of the model
    memory_total_mb: int
    memory_used_mb: int
    utilization_percent: int
    temperature_c: int
    power_usage_w: float
    power_limit_w: float
    mig_mode: MigMode
    instances: tuple[MigInstance, ...] = ()
    mig_pending: bool = False  # a MIG mode change waits for a reset
    simulated: bool = False
    sharing: GpuSharing | None = None  # only on GPUs with MIG disabled
    # The MIG layout is what another system advertises (a Kubernetes node's
    # nvidia.com/mig-* resources): a profile it does not list is not offered at all,
    # where a static GPU of Sandman's own could be laid out anew by an admin.
    advertised_only: bool = False

    @property
    def memory_free_mb(self) -> int:
        return max(0, self.memory_total_mb - self.memory_used_mb)


class GpuInventory(Protocol):
    """What Sandman needs from a GPU backend (``simulated`` or ``nvml``)."""

    backend: str  # "simulated" | "nvml"
    simulated: bool

    def devices(self) -> list[GpuDevice]:
        """Every GPU with current metrics and its existing MIG instances."""
        ...

    def create_instance(self, gpu_uuid: str, profile: str, start: int) -> MigInstance:
        """Create a GPU instance plus a full compute instance at ``start``.

        Raises ``InvalidLayout`` when the placement is not allowed or overlaps,
        ``GpuError`` for backend failures, ``NotFound`` for an unknown GPU.
        """
        ...

    def destroy_instance(self, gpu_uuid: str, instance_uuid: str) -> None:
        """Destroy an instance; an instance that is already gone is success."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class GpuRequest:
    """What a session asks for. At most one field is set; none means 'no preference'."""

    mig_profile: str | None = None
    mig_instance_uuid: str | None = None
    gpu_count: int | None = None  # whole GPUs; 0 = no GPU at all
    gpu_memory_gb: float | None = None
    shared: bool = False  # one replica of a shared GPU (time-slicing or MPS)
    whole: bool = False  # with gpu_memory_gb: a whole GPU of that memory, never MIG


@dataclass(frozen=True)
class Claim:
    """A part of a GPU that an active session holds (from the database)."""

    gpu_uuid: str
    start: int  # first memory slice; 0 for a whole GPU
    size: int  # memory slices; for a whole GPU, all of them (or 1 on a non-MIG GPU)
    profile: str | None  # None for a whole GPU or a replica of a shared one
    instance_uuid: str | None = None
    replica: int | None = None  # the replica held of a shared GPU


AllocationKind = Literal["mig_instance", "mig_create", "whole_gpu", "gpu_share"]


@dataclass(frozen=True)
class Allocation:
    """One planned grant. ``instance_uuid`` is set when an existing instance is used;
    ``mig_create`` means the caller must create ``profile`` at ``start`` first.

    ``gpu_share`` is one replica (``replica``) of a shared GPU; ``sharing`` is that
    GPU's setting, also on a ``whole_gpu`` of a shared GPU (which holds every replica).
    A share's ``memory_mb`` is what MPS limits it to, or the whole GPU's when
    time-sliced."""

    gpu_uuid: str
    kind: AllocationKind
    profile: str | None
    start: int
    size: int
    memory_mb: int
    instance_uuid: str | None = None
    fallback: bool = False  # a MIG profile was asked for, a whole GPU is given
    notes: tuple[str, ...] = field(default=())
    replica: int | None = None
    sharing: GpuSharing | None = None
    reason: str | None = None  # why this GPU and slot, for operators (the placement policy)

    @property
    def share(self) -> float | None:
        """The fraction of the GPU a ``gpu_share`` counts; None for other grants."""
        if self.kind != "gpu_share" or self.sharing is None:
            return None
        return self.sharing.share
