"""The contract between Sandman and a session runtime.

The services describe a session in runtime-neutral terms (``SessionLaunch``:
files with their content, a workspace, a GPU grant, limits) and the runtime
decides how each reaches the session:

============================  ==============================  ==============================
concern                       Docker (``runtime/docker``)     Kubernetes (later)
============================  ==============================  ==============================
secrets and files             host files, bind-mounted r/o    a Secret, mounted
workspace                     a host directory, bind-mounted  a PersistentVolumeClaim
workspace quota               a sparse ext4 image per user,   the claim's size
                              loop-mounted on that directory
GPU grant                     device UUIDs to the NVIDIA      an extended resource
                              runtime                         (``nvidia.com/mig-1g.5gb``)
how Sandman reaches sshd      ``endpoint`` in the state:      the pod's address
                              the published port on loopback
                              or the container's address
host ports                    ``publishes_ports = True``:     none
                              the services reserve one
============================  ==============================  ==============================

Every method is synchronous and idempotent where the name says so; callers run
them in worker threads. Failures are domain errors: ``RuntimeUnavailable`` when
the runtime does not answer, ``RuntimeFailure`` when it refuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

MANAGED_LABEL = "sandman.managed"
SESSION_LABEL = "sandman.session_id"
USER_LABEL = "sandman.user_id"
DEPLOYMENT_LABEL = "sandman.deployment"

SSHD_PORT = 2222  # where sshd listens inside every session


@dataclass(frozen=True)
class SessionFile:
    """A file the session needs at ``path`` (secrets included), with its content."""

    path: str  # absolute path inside the session
    content: str
    mode: int = 0o644
    owned_by_user: bool = False  # owned by the session's uid:gid, else by root


@dataclass(frozen=True)
class Workspace:
    """The user's persistent home; a runtime provides it and never deletes it."""

    user_id: str
    uid: int
    gid: int
    mount_path: str = "/workspace"
    quota_bytes: int | None = None  # what a new workspace may hold; None: no limit


@dataclass(frozen=True)
class WorkspaceUsage:
    """A workspace as it is now: how it is stored, what it may hold, what it holds."""

    storage: str  # "image" (enforced), "directory" (no limit), or a runtime's own word
    quota_bytes: int | None  # the limit writes hit now; None when nothing enforces one
    used_bytes: int | None  # None when not measured (a plain directory, an image not mounted)

    @property
    def enforced(self) -> bool:
        return self.quota_bytes is not None


@dataclass(frozen=True)
class GpuGrant:
    """The GPUs a session holds, in the runtime-neutral words of the planner."""

    device_ids: tuple[str, ...] = ()  # MIG instance or GPU UUIDs
    mig_profile: str | None = None  # set for MIG grants
    real: bool = False  # hand real devices to the session (not simulated)
    # The catalogue's model of the GPU (A100-40GB), where the runtime needs it to
    # place the session (Kubernetes: node selectors per model); None: not known.
    model: str | None = None

    @property
    def count(self) -> int:
        return len(self.device_ids)


@dataclass(frozen=True)
class Endpoint:
    """Where Sandman and the gateway reach a session's sshd."""

    host: str
    port: int


@dataclass(frozen=True)
class SessionLaunch:
    """Everything needed to start one session, with no runtime types."""

    session_id: str
    name: str
    image: str
    command: tuple[str, ...]
    hostname: str
    workspace: Workspace
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    files: tuple[SessionFile, ...] = ()
    gpu: GpuGrant = GpuGrant()
    cpus: float = 1.0
    memory: str = "1g"
    pids_limit: int = 4096
    shm_size: str = "64m"
    host_port: int | None = None  # where to publish sshd, for runtimes that publish ports

    @property
    def user(self) -> str:
        return f"{self.workspace.uid}:{self.workspace.gid}"


@dataclass(frozen=True)
class ContainerState:
    id: str
    name: str
    labels: dict[str, str]
    running: bool
    status: str  # runtime's word: "running", "exited", "created", ...
    exit_code: int | None = None
    ip_address: str | None = None
    endpoint: Endpoint | None = None  # where sshd answers, once known
    # Where the runtime, not Sandman, placed it (a Kubernetes node), once known.
    node: str | None = None
    # When its process ended, where the runtime says (a pod's container); None if
    # it runs, or the runtime does not tell (Docker).
    finished_at: datetime | None = None


@dataclass(frozen=True)
class ExecResult:
    exit_code: int | None  # None when the command was cut off by the timeout
    output: str  # stdout and stderr, interleaved

    @property
    def timed_out(self) -> bool:
        return self.exit_code is None


@dataclass(frozen=True)
class ContainerStats:
    """A running container's counters, as one cheap read of the engine gives them.

    ``cpu_seconds`` is CPU time used since the container started, all cores
    together; two readings make a rate (``sandman.observe.measure``).
    ``cpu_percent`` is the engine's own rate (percent of one core) where the read
    carried one, else None.
    """

    cpu_seconds: float
    cpu_percent: float | None = None


class SessionRuntime(Protocol):
    publishes_ports: bool  # whether a session needs a host port reserved for its sshd

    def ping(self) -> None:
        """Raise ``RuntimeUnavailable`` when the runtime does not answer."""
        ...

    def prepare(self) -> None:
        """Create what every session shares (an isolated network); idempotent."""
        ...

    def workspace_owner(self, user_id: str) -> int | None:
        """The uid owning a workspace left from an earlier install, if the runtime can tell."""
        ...

    def start(self, launch: SessionLaunch) -> ContainerState:
        """Provide files and workspace, then create and start; on failure nothing is left."""
        ...

    def remove(self, name_or_id: str, grace_seconds: float) -> None:
        """Stop (SIGTERM, then SIGKILL after the grace period) and remove; gone is success."""
        ...

    def discard(self, session_id: str) -> None:
        """Forget the session's files and secrets (never its workspace); idempotent."""
        ...

    def inspect(self, name_or_id: str) -> ContainerState | None:
        """The state, or None when it does not exist."""
        ...

    def list(self, labels: dict[str, str]) -> list[ContainerState]:
        """Sessions' containers (running or not) carrying all these labels."""
        ...

    def logs(self, name_or_id: str, tail: int = 50) -> str: ...

    def exec(self, name_or_id: str, argv: Sequence[str], user: str, timeout: float) -> ExecResult:
        """Run ``argv`` inside the session as ``user`` (``uid:gid``), cut off after timeout."""
        ...

    def workspace_usage(self, user_id: str) -> WorkspaceUsage | None:
        """The workspace's storage, limit and use; None when it does not exist yet."""
        ...

    def resize_workspace(self, user_id: str, quota_bytes: int, live: bool) -> WorkspaceUsage:
        """Give an existing workspace a new limit; ``live``: a session uses it now.

        ``Conflict`` when it holds more than ``quota_bytes``, or when the change needs
        the workspace out of use and ``live`` says it is not.
        """
        ...

    def migrate_workspace(self, user_id: str, quota_bytes: int) -> str | None:
        """Move a workspace that has no limit yet into storage that enforces one, byte
        for byte; the caller makes sure no session uses it. Returns what happened (and
        where the original was kept), or None when there was nothing to move."""
        ...

    def restore_workspaces(self) -> tuple[str, ...]:
        """Make every workspace with a limit available again (after a reboot, say);
        returns warnings for the log, such as storage promised beyond the disk."""
        ...

    def release_workspace(self, user_id: str) -> bool:
        """Take a workspace out of use on this host (uninstall); False when it was not in use."""
        ...

    def stats(self, name_or_id: str) -> ContainerStats | None:
        """The container's counters now (one read; Docker answers it with its next
        one-second sample); None when it does not exist or is not running."""
        ...


@runtime_checkable
class Snapshotting(Protocol):
    """What a runtime offers to keep a session's writable layer (``services.snapshots``).

    Optional: a runtime without these methods (Kubernetes, say) is a
    ``SessionRuntime`` all the same, and Sandman records that it keeps no snapshots;
    one that has them may still answer None or False where it cannot.
    """

    def layer_size(self, name_or_id: str) -> int | None:
        """Bytes of the container's own changes to its image (bind mounts never count);
        None when the runtime cannot tell or the container does not exist."""
        ...

    def commit_snapshot(self, name_or_id: str, image: str, labels: dict[str, str]) -> str | None:
        """Keep the container's writable layer as the local image ``image`` carrying
        ``labels``; its id, or None when the runtime keeps no snapshots."""
        ...

    def snapshot_labels(self, image: str) -> dict[str, str] | None:
        """A local image's labels; None when it does not exist (or is unsupported)."""
        ...

    def remove_snapshot(self, image: str) -> bool:
        """Remove a local image (never by force); False when it is gone or in use."""
        ...


@runtime_checkable
class Explaining(Protocol):
    """What a runtime offers to say why a session's container stopped, in its own
    words (``services.reconciler``).

    Optional: Docker has no such record and Sandman keeps its own reason (the
    container's status and exit code); Kubernetes keeps a pod's events
    (``OutOfnvidia.com/mig-1g.5gb``, an image that cannot be pulled, an eviction).
    """

    def last_event(self, name_or_id: str) -> str | None:
        """The container's last event as ``Reason: message``; None when it is gone
        (a deleted pod's events may be another pod's of that name) or has none."""
        ...
