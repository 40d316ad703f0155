"""Docker backend: every SDK call is short, idempotent and mapped to domain errors.

Files and the workspace reach a container as bind mounts of host paths
(``HostFiles``); sshd is published on a host port, and the endpoint Sandman
reports is that port on loopback, or the container's own address on the
session network (``upstream="network"``, for a gateway running in a container).
A ``Sealer`` keeps that network sealed off from the host (``iptables``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from sandman.errors import ConfigurationError, Conflict, RuntimeFailure, RuntimeUnavailable
from sandman.runtime.base import (
    MANAGED_LABEL,
    SSHD_PORT,
    USER_LABEL,
    ContainerState,
    ContainerStats,
    Endpoint,
    ExecResult,
    SessionLaunch,
    WorkspaceUsage,
)
from sandman.runtime.docker.files import HostFiles
from sandman.runtime.docker.iptables import Sealer
from sandman.runtime.docker.spec import container_kwargs, restart_policy

log = logging.getLogger(__name__)
T = TypeVar("T")

UNREACHABLE = (
    docker.errors.DockerException,
    requests.exceptions.ConnectionError,
    ConnectionError,
    FileNotFoundError,
)


TIMED_OUT = 124  # coreutils timeout's exit status


def loopback_for(bind_address: str) -> str:
    """Where the host reaches a port published on ``bind_address``."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bind_address, bind_address)


def published_port(attrs: dict[str, Any]) -> int | None:
    bindings = (attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{SSHD_PORT}/tcp")
    for binding in bindings or []:
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    return None


def state_from_attrs(attrs: dict[str, Any], bind_address: str, upstream: str) -> ContainerState:
    """A container's ``docker inspect`` document as a ``ContainerState`` (pure)."""
    state = attrs.get("State", {})
    networks = attrs.get("NetworkSettings", {}).get("Networks", {}) or {}
    ip = next((n.get("IPAddress") for n in networks.values() if n.get("IPAddress")), None)
    port = published_port(attrs)
    endpoint = None
    if upstream == "network" and ip:
        endpoint = Endpoint(ip, SSHD_PORT)
    elif port is not None:
        endpoint = Endpoint(loopback_for(bind_address), port)
    return ContainerState(
        id=str(attrs.get("Id", "")),
        name=attrs.get("Name", "").lstrip("/"),
        labels=dict(attrs.get("Config", {}).get("Labels") or {}),
        running=bool(state.get("Running")),
        status=str(state.get("Status", "unknown")),
        exit_code=state.get("ExitCode"),
        ip_address=ip,
        endpoint=endpoint,
    )


def stats_from_engine(raw: dict[str, Any]) -> ContainerStats | None:
    """``GET /containers/{id}/stats`` as ``ContainerStats`` (pure); None for a container
    that is not running (the engine then sends zeros).

    The engine's own rate is worked out as ``docker stats`` does: the container's
    CPU time over the host's between the two samples the engine took, times the
    number of CPUs, in percent of one core. A one-shot read has no earlier sample.
    """
    cpu = raw.get("cpu_stats") or {}
    usage = cpu.get("cpu_usage") or {}
    total = usage.get("total_usage")
    if not total:
        return None
    pre = raw.get("precpu_stats") or {}
    pre_total = (pre.get("cpu_usage") or {}).get("total_usage") or 0
    system = (cpu.get("system_cpu_usage") or 0) - (pre.get("system_cpu_usage") or 0)
    cpus = cpu.get("online_cpus") or len(usage.get("percpu_usage") or []) or 1
    percent = None
    if pre_total and pre.get("system_cpu_usage") and system > 0:
        percent = 100.0 * (total - pre_total) / system * cpus
    return ContainerStats(cpu_seconds=total / 1e9, cpu_percent=percent)


# The session's own environment variables a snapshot blanks (comma-separated).
SESSION_ENV_LABEL = "sandman.session_env"


def snapshot_changes(
    container_env: Sequence[str], image_env: Sequence[str], carried: str, labels: dict[str, str]
) -> list[str]:
    """``docker commit`` changes for a snapshot (pure): its labels, and every variable
    the session's launch gave the container (those its image lacks, and those an
    earlier snapshot in the chain already blanked) set empty.

    A commit keeps the container's environment, and a container cannot unset a
    variable of its image: without this, a restored session would inherit the old
    one's GPU share (``CUDA_MPS_*``) or MIG profile wherever its own launch does not
    set them again. An empty value is the nearest Docker allows to unset.
    """

    def keys(env: Sequence[str]) -> set[str]:
        return {item.split("=", 1)[0] for item in env if item}

    session = (keys(container_env) - keys(image_env)) | {k for k in carried.split(",") if k}
    changes = [f'ENV {key}=""' for key in sorted(session)]
    marked = {**labels, SESSION_ENV_LABEL: ",".join(sorted(session))}
    changes += [f'LABEL "{k}"="{v}"' for k, v in sorted(marked.items())]
    return changes


class DockerRuntime:
    """``SessionRuntime`` on a local Docker engine."""

    publishes_ports = True

    def __init__(
        self,
        files: HostFiles,
        network: str,
        bind_address: str = "127.0.0.1",
        upstream: str = "published",
        base_url: str | None = None,
        timeout: int = 60,
        sealer: Sealer | None = None,
    ) -> None:
        self.files = files
        self.sealer = sealer  # None: sessions can reach this host (development machines)
        self.network = network
        self.bind_address = bind_address
        self.upstream = upstream
        self._base_url = base_url
        self._timeout = timeout
        self._client: Any = None
        self._restart: str | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    if self._base_url:
                        self._client = docker.DockerClient(
                            base_url=self._base_url, version="auto", timeout=self._timeout
                        )
                    else:
                        self._client = docker.from_env(version="auto", timeout=self._timeout)
                except UNREACHABLE as exc:
                    raise RuntimeUnavailable(f"the Docker engine does not answer: {exc}") from exc
            return self._client

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except docker.errors.APIError as exc:
            raise RuntimeFailure(f"Docker refused to {what}: {exc.explanation or exc}") from exc
        except UNREACHABLE as exc:
            raise RuntimeUnavailable(f"the Docker engine does not answer ({what}): {exc}") from exc

    def ping(self) -> None:
        self._call("answer a ping", lambda: self.client.ping())

    def image_tags(self) -> set[str]:
        """Every tag of the engine's images (one call: the portal shows which
        environments are built)."""
        listed = self._call("list images", lambda: self.client.api.images())
        return {tag for image in listed for tag in (image.get("RepoTags") or ())}

    def _restart_policy(self) -> str:
        """Asked of the engine once per client: whether it restores containers live."""
        if self._restart is None:
            info = self.client.info()
            self._restart = restart_policy(bool(info.get("LiveRestoreEnabled")))
            if self._restart != "no":
                log.warning(
                    "the Docker engine has no live restore: restarting it stops every session "
                    '(they come back, with their processes lost); set "live-restore": true '
                    "in /etc/docker/daemon.json to keep them running"
                )
        return self._restart

    def _state(self, container: Any) -> ContainerState:
        return state_from_attrs(container.attrs, self.bind_address, self.upstream)

    def workspace_owner(self, user_id: str) -> int | None:
        return self.files.existing_workspace_owner(user_id)

    def discard(self, session_id: str) -> None:
        self.files.discard(session_id)

    def prepare(self) -> None:
        """Create the isolated session network if missing (no inter-container traffic);
        refuse one that exists and lets containers reach each other; seal it (firewall
        rules, checked again on every call: an engine restart may have dropped them)."""
        name = self.network

        def isolated(attrs: dict[str, Any]) -> dict[str, Any]:
            options = attrs.get("Options") or {}
            if options.get("com.docker.network.bridge.enable_icc") != "false":
                raise ConfigurationError(
                    f"network {name} lets containers reach each other, so one user's "
                    f"session could reach another's; remove it (docker network rm {name}, "
                    "once no container uses it) and Sandman creates it isolated, or set "
                    "SANDMAN_NETWORK_NAME to a network name not in use"
                )
            return attrs

        def ensure() -> dict[str, Any]:
            attrs = self._network_attrs()
            if attrs is not None:
                return isolated(attrs)
            try:
                created = self.client.networks.create(
                    name,
                    driver="bridge",
                    options={"com.docker.network.bridge.enable_icc": "false"},
                    labels={"sandman.managed": "true"},
                )
                return dict(created.attrs)
            except docker.errors.APIError as exc:
                if exc.status_code != 409 or (attrs := self._network_attrs()) is None:
                    raise
                return isolated(attrs)  # created by another Sandman meanwhile

        attrs = self._call(f"create network {name}", ensure)
        if self.sealer is not None:
            self.sealer.seal(attrs)

    def _network_attrs(self) -> dict[str, Any] | None:
        found = self.client.networks.list(names=[self.network])
        named = [n for n in found if n.name == self.network]  # the filter matches parts
        return dict(named[0].attrs) if named else None

    def network_attrs(self) -> dict[str, Any] | None:
        """The session network's ``docker network inspect`` document, if it exists."""
        return self._call(f"inspect network {self.network}", self._network_attrs)

    def start(self, launch: SessionLaunch) -> ContainerState:
        def create_and_start() -> ContainerState:
            mounts = self.files.write(launch)
            kwargs = container_kwargs(
                launch, mounts, self.network, self.bind_address, self._restart_policy()
            )
            container = self.client.containers.create(**kwargs)
            try:
                container.start()
                container.reload()
            except BaseException:
                self._force_remove(container.id)
                raise
            return self._state(container)

        try:
            # Held until the container runs: a migration or a shrink of the workspace
            # never swaps it under a container being started.
            with self.files.images.lock(launch.workspace.user_id):
                return self._call(f"start container {launch.name}", create_and_start)
        except BaseException:
            self.files.discard(launch.session_id)
            raise

    def _force_remove(self, name_or_id: str) -> None:
        try:
            self.client.api.remove_container(name_or_id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409 or "already in progress" not in str(exc):
                raise

    def remove(self, name_or_id: str, grace_seconds: float) -> None:
        def stop_and_remove() -> None:
            if grace_seconds <= 0:  # nothing to wait for: one call kills and removes
                self._force_remove(name_or_id)
                return
            try:
                self.client.api.stop(name_or_id, timeout=max(0, round(grace_seconds)))
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                log.info("stop of %s failed (%s); removing by force", name_or_id, exc)
            self._force_remove(name_or_id)

        self._call(f"remove container {name_or_id}", stop_and_remove)

    def inspect(self, name_or_id: str) -> ContainerState | None:
        def get() -> ContainerState | None:
            try:
                return self._state(self.client.containers.get(name_or_id))
            except docker.errors.NotFound:
                return None

        return self._call(f"inspect container {name_or_id}", get)

    def list(self, labels: dict[str, str]) -> list[ContainerState]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}

        def list_all() -> list[ContainerState]:
            found = []
            for item in self.client.api.containers(all=True, filters=filters):
                found.append(
                    ContainerState(
                        id=item["Id"],
                        name=(item.get("Names") or ["/"])[0].lstrip("/"),
                        labels=dict(item.get("Labels") or {}),
                        running=item.get("State") == "running",
                        status=str(item.get("State", "unknown")),
                    )
                )
            return found

        return self._call("list containers", list_all)

    def stats(self, name_or_id: str) -> ContainerStats | None:
        def get() -> ContainerStats | None:
            try:
                raw = self.client.api.stats(name_or_id, stream=False, one_shot=True)
            except docker.errors.NotFound:
                return None
            return stats_from_engine(raw)

        return self._call(f"read the statistics of {name_or_id}", get)

    def logs(self, name_or_id: str, tail: int = 50) -> str:
        def get() -> str:
            try:
                raw = self.client.api.logs(name_or_id, tail=tail)
            except docker.errors.NotFound:
                return ""
            return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)

        return self._call(f"read logs of {name_or_id}", get)

    def exec(self, name_or_id: str, argv: Sequence[str], user: str, timeout: float) -> ExecResult:
        """``docker exec`` under coreutils' ``timeout``, so a hung command is killed inside."""
        seconds = f"{max(timeout, 0.1):g}"
        wrapped = ["timeout", "-k", "2", seconds, *argv]

        def run() -> ExecResult:
            try:
                exec_id = self.client.api.exec_create(
                    name_or_id, wrapped, user=user, stdout=True, stderr=True, stdin=False
                )["Id"]
            except docker.errors.NotFound:
                raise RuntimeFailure(f"no container {name_or_id} to run a command in") from None
            raw = self.client.api.exec_start(exec_id, demux=False)
            code = self.client.api.exec_inspect(exec_id).get("ExitCode")
            output = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
            return ExecResult(None if code == TIMED_OUT else code, output)

        return self._call(f"run a command in {name_or_id}", run)

    # ------------------------------------------------------------ snapshots
    def layer_size(self, name_or_id: str) -> int | None:
        def get() -> int | None:
            # ``docker inspect --size``: the SDK's inspect takes no size, its list does.
            try:
                full_id = self.client.api.inspect_container(name_or_id)["Id"]
            except docker.errors.NotFound:
                return None
            found = self.client.api.containers(all=True, size=True, filters={"id": full_id})
            size = found[0].get("SizeRw") if found else None
            return int(size) if isinstance(size, int) else None

        return self._call(f"measure the writable layer of {name_or_id}", get)

    def commit_snapshot(self, name_or_id: str, image: str, labels: dict[str, str]) -> str | None:
        repository, _, tag = image.rpartition(":")

        def commit() -> str:
            attrs = self.client.api.inspect_container(name_or_id)
            parent = self.client.api.inspect_image(attrs["Image"]).get("Config") or {}
            changes = snapshot_changes(
                (attrs.get("Config") or {}).get("Env") or [],
                parent.get("Env") or [],
                (parent.get("Labels") or {}).get(SESSION_ENV_LABEL, ""),
                labels,
            )
            # Paused while committed, so the layer is consistent; bind mounts
            # (/workspace, the secret files) are never part of a commit.
            done = self.client.api.commit(
                name_or_id, repository=repository, tag=tag, changes=changes, pause=True
            )
            return str(done.get("Id", ""))

        return self._call(f"commit a snapshot of {name_or_id}", commit)

    def snapshot_labels(self, image: str) -> dict[str, str] | None:
        def get() -> dict[str, str] | None:
            try:
                attrs = self.client.api.inspect_image(image)
            except docker.errors.ImageNotFound:
                return None
            return dict((attrs.get("Config") or {}).get("Labels") or {})

        return self._call(f"inspect image {image}", get)

    def remove_snapshot(self, image: str) -> bool:
        def remove() -> bool:
            try:
                self.client.api.remove_image(image, force=False, noprune=False)
            except docker.errors.ImageNotFound:
                return False
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # a container still uses it
                    log.info("snapshot %s kept: %s", image, exc.explanation or exc)
                    return False
                raise
            return True

        return self._call(f"remove image {image}", remove)

    # ------------------------------------------------------------ workspaces
    def workspace_usage(self, user_id: str) -> WorkspaceUsage | None:
        return self.files.images.usage(user_id)

    def _in_use(self, user_id: str) -> bool:
        """Whether a running container mounts the user's workspace (this engine's view)."""
        path = str(self.files.workspace(user_id))
        filters = {"label": [f"{MANAGED_LABEL}=true", f"{USER_LABEL}={user_id}"]}

        def mounted() -> bool:
            return any(
                mount.get("Source") == path
                for item in self.client.api.containers(filters=filters)
                for mount in item.get("Mounts") or []
            )

        return self._call("list containers", mounted)

    def resize_workspace(self, user_id: str, quota_bytes: int, live: bool) -> WorkspaceUsage:
        images = self.files.images
        with images.lock(user_id):
            if not images.image(user_id).exists():
                found = images.usage(user_id)
                if found is None:
                    raise RuntimeFailure(f"{user_id} has no workspace to resize")
                return found  # a plain directory: the quota applies once it is migrated
            return images.resize(user_id, quota_bytes, live or self._in_use(user_id))

    def migrate_workspace(self, user_id: str, quota_bytes: int) -> str | None:
        from sandman.runtime.docker.migration import migrate

        with self.files.images.lock(user_id):
            if self._in_use(user_id):
                raise Conflict(f"a container of {user_id} runs on the workspace; end it first")
            return migrate(self.files.images, user_id, quota_bytes)

    def restore_workspaces(self) -> tuple[str, ...]:
        return tuple(self.files.images.restore())

    def release_workspace(self, user_id: str) -> bool:
        return self.files.images.release(user_id)
