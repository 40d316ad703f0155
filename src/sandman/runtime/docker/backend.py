"""Docker backend: every SDK call is short, idempotent and mapped to domain errors."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from sandman.errors import RuntimeFailure, RuntimeUnavailable
from sandman.runtime.base import ContainerSpec, ContainerState
from sandman.runtime.docker.spec import container_kwargs

log = logging.getLogger(__name__)
T = TypeVar("T")

UNREACHABLE = (
    docker.errors.DockerException,
    requests.exceptions.ConnectionError,
    ConnectionError,
    FileNotFoundError,
)


def _state(container: Any) -> ContainerState:
    attrs = container.attrs
    state = attrs.get("State", {})
    networks = attrs.get("NetworkSettings", {}).get("Networks", {}) or {}
    ip = next((n.get("IPAddress") for n in networks.values() if n.get("IPAddress")), None)
    return ContainerState(
        id=container.id,
        name=attrs.get("Name", "").lstrip("/") or container.name,
        labels=dict(attrs.get("Config", {}).get("Labels") or {}),
        running=bool(state.get("Running")),
        status=str(state.get("Status", "unknown")),
        exit_code=state.get("ExitCode"),
        ip_address=ip,
    )


class DockerRuntime:
    """``ContainerRuntime`` on a local Docker engine."""

    def __init__(self, base_url: str | None = None, timeout: int = 60) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._client: Any = None
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

    def ensure_network(self, name: str) -> None:
        def ensure() -> None:
            found = self.client.networks.list(names=[name])
            existing = [n for n in found if n.name == name]
            if existing:
                options = existing[0].attrs.get("Options") or {}
                if options.get("com.docker.network.bridge.enable_icc") != "false":
                    log.warning(
                        "network %s allows traffic between containers; session containers "
                        "can reach each other. Remove it to let Sandman recreate it isolated.",
                        name,
                    )
                return
            try:
                self.client.networks.create(
                    name,
                    driver="bridge",
                    options={"com.docker.network.bridge.enable_icc": "false"},
                    labels={"sandman.managed": "true"},
                )
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise

        self._call(f"create network {name}", ensure)

    def start(self, spec: ContainerSpec) -> ContainerState:
        kwargs = container_kwargs(spec)

        def create_and_start() -> ContainerState:
            container = self.client.containers.create(**kwargs)
            try:
                container.start()
                container.reload()
            except BaseException:
                self._force_remove(container.id)
                raise
            return _state(container)

        return self._call(f"start container {spec.name}", create_and_start)

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
                return _state(self.client.containers.get(name_or_id))
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

    def logs(self, name_or_id: str, tail: int = 50) -> str:
        def get() -> str:
            try:
                raw = self.client.api.logs(name_or_id, tail=tail)
            except docker.errors.NotFound:
                return ""
            return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)

        return self._call(f"read logs of {name_or_id}", get)
