"""A session runtime in memory, for unit tests of the services: no root, no Docker.

It behaves like the contract says (``start`` leaves nothing behind on failure,
``remove`` of a gone container succeeds) and lets a test break it on purpose:
an unreachable engine, a start that fails or hangs, a container that dies or
vanishes, sshd that never answers. Every call is counted.

Workspaces are records: a start makes one (an "image" of the launch's quota, or
a "directory" without one); a test sets what one holds (``workspaces``) and
reads what was resized and migrated.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sandman.errors import RuntimeFailure, RuntimeUnavailable
from sandman.runtime.base import (
    SSHD_PORT,
    ContainerState,
    ContainerStats,
    Endpoint,
    ExecResult,
    SessionLaunch,
    WorkspaceUsage,
)
from sandman.runtime.docker.quota import plan_resize


@dataclass
class FakeContainer:
    state: ContainerState
    launch: SessionLaunch


class FakeRuntime:
    def __init__(self, publishes_ports: bool = False) -> None:
        self.publishes_ports = publishes_ports
        self.containers: dict[str, FakeContainer] = {}
        self.calls: Counter[str] = Counter()
        self.removed: Counter[str] = Counter()  # container id -> remove calls that found it
        self.discarded: Counter[str] = Counter()  # session id -> discard calls
        self.exec_log: list[tuple[str, list[str], str]] = []
        self.unreachable = False
        self.start_error: Exception | None = None
        self.start_gate: threading.Event | None = None  # start blocks until it is set
        self.sshd_answers = True
        self.lock = threading.Lock()
        self.workspaces: dict[str, WorkspaceUsage] = {}
        self.resized: list[tuple[str, int, bool]] = []  # (user, quota, live)
        self.migrated: list[tuple[str, int]] = []
        self.workspace_warnings: list[str] = []
        self.cpu_seconds: dict[str, float] = {}  # container name -> CPU time used so far
        # Snapshots: the layer size each container reports (by name; default 0), and
        # the images committed (name -> labels); snapshots_supported=False answers None.
        self.layer_sizes: dict[str, int] = {}
        self.images: dict[str, dict[str, str]] = {}
        self.images_in_use: set[str] = set()
        self.snapshots_supported = True

    # ------------------------------------------------------------ test controls
    def kill(self, name_or_id: str, exit_code: int = 137) -> None:
        """The container's process dies (it stays, exited)."""
        with self.lock:
            found = self._find(name_or_id)
            assert found is not None, name_or_id
            found.state = replace(found.state, running=False, status="exited", exit_code=exit_code)

    def vanish(self, name_or_id: str) -> None:
        """The container disappears behind Sandman's back."""
        with self.lock:
            found = self._find(name_or_id)
            assert found is not None, name_or_id
            del self.containers[found.state.id]

    def running(self) -> list[ContainerState]:
        with self.lock:
            return [c.state for c in self.containers.values() if c.state.running]

    def burn(self, name: str, cpu_seconds: float) -> None:
        """The container's processes use ``cpu_seconds`` more CPU time."""
        with self.lock:
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + cpu_seconds

    def probe(self, host: str, port: int) -> bool:
        """The readiness probe: sshd answers at a running container's endpoint."""
        with self.lock:
            found = self._find(host)
            return bool(found and found.state.running and self.sshd_answers)

    # ---------------------------------------------------------------- contract
    def _find(self, name_or_id: str) -> FakeContainer | None:
        if name_or_id in self.containers:
            return self.containers[name_or_id]
        return next((c for c in self.containers.values() if c.state.name == name_or_id), None)

    def _check(self, what: str) -> None:
        self.calls[what] += 1
        if self.unreachable:
            raise RuntimeUnavailable(f"the fake engine does not answer ({what})")

    def ping(self) -> None:
        self._check("ping")

    def prepare(self) -> None:
        self._check("prepare")

    def workspace_owner(self, user_id: str) -> int | None:
        return None

    def start(self, launch: SessionLaunch) -> ContainerState:
        self._check("start")
        if self.start_gate is not None and not self.start_gate.wait(timeout=30):
            raise RuntimeFailure("the fake start hung past 30 s")
        if self.start_error is not None:
            raise self.start_error
        with self.lock:
            if self._find(launch.name) is not None:
                raise RuntimeFailure(f"a container named {launch.name} exists")
            quota = launch.workspace.quota_bytes
            self.workspaces.setdefault(
                launch.workspace.user_id,
                WorkspaceUsage("image", quota, 0)
                if quota is not None
                else WorkspaceUsage("directory", None, None),
            )
            state = ContainerState(
                id=uuid.uuid4().hex,
                name=launch.name,
                labels=dict(launch.labels),
                running=True,
                status="running",
                ip_address="10.88.0.2",
                endpoint=Endpoint(launch.name, SSHD_PORT),
            )
            self.containers[state.id] = FakeContainer(state, launch)
            return state

    def remove(self, name_or_id: str, grace_seconds: float) -> None:
        self._check("remove")
        with self.lock:
            found = self._find(name_or_id)
            if found is not None:
                self.removed[found.state.id] += 1
                del self.containers[found.state.id]

    def discard(self, session_id: str) -> None:
        self.calls["discard"] += 1
        with self.lock:
            self.discarded[session_id] += 1

    def inspect(self, name_or_id: str) -> ContainerState | None:
        self._check("inspect")
        with self.lock:
            found = self._find(name_or_id)
            return found.state if found else None

    def list(self, labels: dict[str, str]) -> list[ContainerState]:
        self._check("list")
        with self.lock:
            return [
                c.state
                for c in self.containers.values()
                if all(c.state.labels.get(k) == v for k, v in labels.items())
            ]

    def stats(self, name_or_id: str) -> ContainerStats | None:
        self._check("stats")
        with self.lock:
            found = self._find(name_or_id)
            if found is None or not found.state.running:
                return None
            return ContainerStats(self.cpu_seconds.get(found.state.name, 0.0))

    def logs(self, name_or_id: str, tail: int = 50) -> str:
        return "fake logs"

    def layer_size(self, name_or_id: str) -> int | None:
        self._check("layer_size")
        with self.lock:
            found = self._find(name_or_id)
            if found is None or not self.snapshots_supported:
                return None
            return self.layer_sizes.get(found.state.name, 0)

    def commit_snapshot(self, name_or_id: str, image: str, labels: dict[str, str]) -> str | None:
        self._check("commit_snapshot")
        with self.lock:
            if not self.snapshots_supported:
                return None
            assert self._find(name_or_id) is not None, name_or_id
            self.images[image] = dict(labels)
            return f"sha256:{len(self.images):064x}"

    def snapshot_labels(self, image: str) -> dict[str, str] | None:
        with self.lock:
            return dict(self.images[image]) if image in self.images else None

    def remove_snapshot(self, image: str) -> bool:
        with self.lock:
            if image not in self.images or image in self.images_in_use:
                return False
            del self.images[image]
            return True

    def exec(self, name_or_id: str, argv: Sequence[str], user: str, timeout: float) -> ExecResult:
        self._check("exec")
        with self.lock:
            found = self._find(name_or_id)
            if found is None or not found.state.running:
                raise RuntimeFailure(f"no running container {name_or_id}")
            self.exec_log.append((name_or_id, list(argv), user))
        return ExecResult(0, "")

    def workspace_usage(self, user_id: str) -> WorkspaceUsage | None:
        with self.lock:
            return self.workspaces.get(user_id)

    def resize_workspace(self, user_id: str, quota_bytes: int, live: bool) -> WorkspaceUsage:
        with self.lock:
            found = self.workspaces[user_id]
            if found.quota_bytes is None:
                return found
            plan_resize(found.quota_bytes, found.used_bytes, quota_bytes, live, online_grow=True)
            self.resized.append((user_id, quota_bytes, live))
            self.workspaces[user_id] = replace(found, quota_bytes=quota_bytes)
            return self.workspaces[user_id]

    def migrate_workspace(self, user_id: str, quota_bytes: int) -> str | None:
        with self.lock:
            found = self.workspaces.get(user_id)
            if found is None or found.enforced:
                return None
            self.migrated.append((user_id, quota_bytes))
            self.workspaces[user_id] = WorkspaceUsage("image", quota_bytes, 0)
            return f"{user_id}: moved"

    def restore_workspaces(self) -> tuple[str, ...]:
        self.calls["restore_workspaces"] += 1
        return tuple(self.workspace_warnings)

    def release_workspace(self, user_id: str) -> bool:
        with self.lock:
            found = self.workspaces.get(user_id)
            return found is not None and found.enforced
