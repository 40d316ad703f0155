"""What a session request may ask for: checks that turn bad input into a clear 400."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from sandman.config import Settings
from sandman.errors import InvalidRequest
from sandman.gpu.types import GpuDevice, GpuRequest
from sandman.policy.workload import choose, parse_workload


@dataclass(frozen=True)
class SessionRequest:
    """A request typed by the API; ``SessionService.create`` checks its values."""

    user_id: str
    ttl_minutes: int | None = None
    gpu: GpuRequest = field(default_factory=GpuRequest)
    image: str | None = None
    ssh_public_keys: list[str] | None = None
    cpus: float | None = None
    memory: str | None = None
    team: str | None = None
    project: str | None = None
    priority: str = "normal"  # low | normal | high (policy.quotas.Priority)
    idle_timeout_minutes: int | None = None  # None: the deployment's; 0: never
    labels: dict[str, str] = field(default_factory=dict)
    queue: bool = False  # wait in the queue when nothing fits now (202, ``queued``)
    # training | inference | interactive | development: with gpu_memory_gb (or alone)
    # it picks the GPU share (policy.workload); recorded in the label workload_type.
    workload_type: str | None = None
    use_mig: bool | None = None  # seed 003's useMig: overrides the workload's preference
    # The environment it starts from (default base); not with ``image``.
    environment: str | None = None
    # A restore's writable-layer snapshot (``services.snapshots``): the session starts
    # from it instead of ``image``, which stays the image the policies check. Set only
    # by a restore, never from a request body.
    snapshot_image: str | None = None


WORKLOAD_LABEL = "workload_type"


def with_workload(
    request: SessionRequest, devices: Callable[[], Sequence[GpuDevice]]
) -> SessionRequest:
    """The request with its workload's GPU share chosen and the workload recorded.

    Only a request that names no share but (at most) ``gpu_memory_gb`` is given one;
    a named profile, instance, count or shared replica stands, the workload recorded.
    """
    if request.workload_type is None:
        return request
    workload = parse_workload(request.workload_type)
    gpu = request.gpu
    labels = {**request.labels, WORKLOAD_LABEL: workload.value}
    open_ = GpuRequest(gpu_memory_gb=gpu.gpu_memory_gb)
    if gpu == open_:
        gpu = choose(workload, gpu.gpu_memory_gb, devices(), request.use_mig).request
    return replace(request, gpu=gpu, labels=labels, workload_type=workload.value)


def checked_ttl(settings: Settings, ttl: int) -> int:
    if (
        isinstance(ttl, bool)
        or not isinstance(ttl, int)
        or not 1 <= ttl <= settings.max_ttl_minutes
    ):
        raise InvalidRequest(
            f"ttl_minutes must be a whole number from 1 to {settings.max_ttl_minutes}"
        )
    return ttl


def checked_image(settings: Settings, image: str | None) -> str:
    chosen = image or settings.default_image
    if chosen not in settings.allowed_images:
        allowed = ", ".join(settings.allowed_images)
        raise InvalidRequest(f"image {chosen!r} is not allowed; allowed: {allowed}")
    return chosen


# A session's memory limit: whole MiB from 64m, GiB with up to two decimals, or whole TiB.
MEMORY_PATTERN = re.compile(
    r"^(?:(?:6[4-9]|[7-9][0-9]|[1-9][0-9]{2,6})m|[1-9][0-9]{0,3}(?:\.[0-9]{1,2})?g|[1-9][0-9]?t)$"
)


def checked_limits(settings: Settings, cpus: float | None, memory: str | None) -> tuple[float, str]:
    """CPU and memory limits the engine will accept on this host."""
    host_cpus = float(os.cpu_count() or 1)
    chosen_cpus = cpus if cpus is not None else min(settings.cpus, host_cpus)
    if not 0.01 <= chosen_cpus <= host_cpus:
        raise InvalidRequest(f"cpus must be between 0.01 and {host_cpus:g} on this host")
    if memory is not None and not MEMORY_PATTERN.fullmatch(memory):
        raise InvalidRequest(
            f"memory {memory!r} is not a limit like 512m, 1.5g or 2t (at least 64m)"
        )
    return chosen_cpus, (memory or settings.memory).strip().lower()


def check_gpu_request(request: GpuRequest) -> None:
    given = [
        name
        for name in ("mig_profile", "mig_instance_uuid", "gpu_count", "gpu_memory_gb")
        if getattr(request, name) is not None
    ]
    if request.shared:
        given.append("shared")
    if len(given) > 1:
        raise InvalidRequest(f"give at most one of {', '.join(given)}")
    if request.gpu_count is not None and not 0 <= request.gpu_count <= 64:
        raise InvalidRequest("gpu_count must be between 0 and 64")
    if request.gpu_memory_gb is not None and request.gpu_memory_gb <= 0:
        raise InvalidRequest("gpu_memory_gb must be positive")
    if request.whole and request.gpu_memory_gb is None:
        raise InvalidRequest("whole needs gpu_memory_gb")
