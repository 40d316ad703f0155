"""Shared GPUs (time-slicing or MPS): what a replica is limited to, and what its
session is told. Pure: the planner, the container spec and the MPS client use it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sandman.gpu.types import Allocation, GpuSharing, SharingMode

__all__ = [
    "GpuShare",
    "mps_thread_percentage",
    "session_share",
    "share_note",
    "sharing_summary",
]


def mps_thread_percentage(sharing: GpuSharing) -> int:
    """The share of the GPU's threads MPS gives one replica (4 replicas: 25)."""
    return max(1, 100 // sharing.replicas)


def share_note(sharing: GpuSharing, memory_mb: int) -> str:
    """What a session on a shared GPU must know about its neighbours."""
    if sharing.mode == "mps":
        return (
            f"MPS limits this session to {mps_thread_percentage(sharing)}% of the GPU's "
            f"threads and {memory_mb} MiB of its memory "
            f"(1 of {sharing.replicas} sessions sharing it)"
        )
    return (
        "time-sliced GPU: no memory isolation; other sessions on this GPU can use all its "
        f"memory (up to {sharing.replicas} sessions share it)"
    )


def sharing_summary(sharing: GpuSharing, held: int) -> dict[str, object]:
    """A shared GPU's setting and its replicas held, as the API shows them."""
    return {
        "mode": sharing.mode,
        "replicas": sharing.replicas,
        "replicas_held": held,
        "replicas_free": max(0, sharing.replicas - held),
        "share": round(sharing.share, 4),
    }


@dataclass(frozen=True)
class GpuShare:
    """A session's replica of a shared GPU, with the limits MPS enforces on it."""

    gpu_uuid: str
    mode: SharingMode
    share: float  # of the GPU: 0.25
    memory_mb: int  # MPS: the pinned memory limit; time-slicing: the whole GPU's
    thread_percentage: int | None  # MPS only

    @property
    def memory_limit(self) -> str | None:
        """MPS's device memory limit as its commands and variables write it: ``10240M``."""
        return f"{self.memory_mb}M" if self.mode == "mps" else None


def session_share(allocations: Sequence[Allocation]) -> GpuShare | None:
    """The session's shared replica, if its grant is one."""
    for a in allocations:
        if a.kind == "gpu_share" and a.sharing is not None:
            mps = a.sharing.mode == "mps"
            return GpuShare(
                gpu_uuid=a.gpu_uuid,
                mode=a.sharing.mode,
                share=a.sharing.share,
                memory_mb=a.memory_mb,
                thread_percentage=mps_thread_percentage(a.sharing) if mps else None,
            )
    return None
