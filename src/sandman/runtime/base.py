"""The contract between Sandman and a container runtime.

A Kubernetes runtime must be a sibling of the Docker one, so the contract speaks
of containers in general terms: a pure ``ContainerSpec`` in, a
``ContainerState`` out. Every method is synchronous and idempotent where the
name says so; callers run them in worker threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

MANAGED_LABEL = "sandman.managed"
SESSION_LABEL = "sandman.session_id"
USER_LABEL = "sandman.user_id"
DEPLOYMENT_LABEL = "sandman.deployment"


@dataclass(frozen=True)
class Mount:
    source: str  # host path
    target: str  # path in the container
    read_only: bool = True


@dataclass(frozen=True)
class PortBinding:
    container_port: int
    host_ip: str
    host_port: int


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to start one session container, with no runtime types."""

    name: str
    image: str
    command: tuple[str, ...]
    user: str  # "uid:gid"
    hostname: str
    network: str
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    ports: tuple[PortBinding, ...] = ()
    cpus: float = 1.0
    memory: str = "1g"
    pids_limit: int = 4096
    shm_size: str = "64m"
    gpu_device_ids: tuple[str, ...] = ()  # passed to the NVIDIA runtime when non-empty


@dataclass(frozen=True)
class ContainerState:
    id: str
    name: str
    labels: dict[str, str]
    running: bool
    status: str  # runtime's word: "running", "exited", "created", ...
    exit_code: int | None = None
    ip_address: str | None = None


class ContainerRuntime(Protocol):
    def ping(self) -> None:
        """Raise ``RuntimeUnavailable`` when the engine does not answer."""
        ...

    def ensure_network(self, name: str) -> None:
        """Create the isolated session network if missing (no inter-container traffic)."""
        ...

    def start(self, spec: ContainerSpec) -> ContainerState:
        """Create and start a container; on failure nothing is left behind."""
        ...

    def remove(self, name_or_id: str, grace_seconds: float) -> None:
        """Stop (SIGTERM, then SIGKILL after the grace period) and remove; gone is success."""
        ...

    def inspect(self, name_or_id: str) -> ContainerState | None:
        """The container's state, or None when it does not exist."""
        ...

    def list(self, labels: dict[str, str]) -> list[ContainerState]:
        """Containers (running or not) carrying all these labels."""
        ...

    def logs(self, name_or_id: str, tail: int = 50) -> str: ...
