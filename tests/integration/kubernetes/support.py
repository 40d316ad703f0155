"""What the Kubernetes session tests share: a namespace of their own with local
volumes for the workspace claims, and reading the pods Sandman made there."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from tests.integration.conftest import Harness
from tests.integration.conftest import test_settings as sandman_settings
from tests.integration.kubernetes.cluster import LocalCluster
from tests.integration.support import TOKEN, Server, free_port

from sandman.api.app import create_app
from sandman.core import Sandman
from sandman.runtime.kubernetes.manifests import make_local_pv, make_local_storage_class

STORAGE_CLASS = "sandman-test-local"


@dataclass(frozen=True)
class Place:
    """A namespace for one module's sessions, and the volumes its claims bind to."""

    namespace: str
    volumes: tuple[str, ...]

    def settings(self, cluster: LocalCluster) -> dict[str, Any]:
        """Sandman's settings for sessions here (a tenth of a core and 256 MiB each,
        so seven pods fit the 2-core node)."""
        return {
            "runtime": "kubernetes",
            "kube_config": str(cluster.kubeconfig_path),
            "kube_namespace": self.namespace,
            "kube_storage_class": STORAGE_CLASS,
            "kube_workspace_size": "1Gi",
            "kube_pending_timeout": 120,
            "start_timeout": 120,
            "create_wait": 120,
            "ssh_mode": "gateway",
            "cpus": 0.1,
            "memory": "256m",
        }

    def env(self, cluster: LocalCluster) -> dict[str, str]:
        """The same settings as ``sandman serve``'s environment."""
        return {f"SANDMAN_{k.upper()}": str(v) for k, v in self.settings(cluster).items()}

    def server(self, cluster: LocalCluster, data_dir: Path, **settings: str) -> Server:
        """A ``sandman serve`` process (not started) for sessions here, on ports of its
        own on 127.0.0.1, with ``settings`` on top (``database_url="..."``)."""
        port = free_port()
        env = {
            **os.environ,
            **self.env(cluster),
            "SANDMAN_DATA_DIR": str(data_dir),
            "SANDMAN_ADMIN_TOKEN": TOKEN,
            "SANDMAN_PORT": str(port),
            "SANDMAN_SSH_LISTEN": f"127.0.0.1:{free_port()}",
            "SANDMAN_APPS_LISTEN": "off",
            "SANDMAN_LOG_LEVEL": "WARNING",
            "SANDMAN_STOP_GRACE_PERIOD": "1",
            **{f"SANDMAN_{k.upper()}": v for k, v in settings.items()},
        }
        data_dir.mkdir(parents=True, exist_ok=True)
        return Server(data_dir, env, f"http://127.0.0.1:{port}")


@contextmanager
def session_namespace(cluster: LocalCluster, root: Path, volumes: int) -> Iterator[Place]:
    """A fresh namespace and ``volumes`` local PersistentVolumes under ``root``;
    both are deleted afterwards (the volumes' directories stay under ``root``)."""
    namespace = f"sandman-test-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(make_local_storage_class(STORAGE_CLASS)))
    names = []
    try:
        for i in range(volumes):
            path = root / "volumes" / f"v{i}"
            path.mkdir(parents=True)
            name = f"{namespace}-v{i}"
            names.append(name)
            volume = make_local_pv(name, str(path), cluster.node_name, 2**40, STORAGE_CLASS)
            cluster.kubectl("apply", "-f", "-", input=json.dumps(volume))
        yield Place(namespace, tuple(names))
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=true", check=False,
                        timeout=180)  # fmt: skip
        if names:
            cluster.kubectl("delete", "pv", *names, "--wait=false", check=False)


@contextmanager
def sandman_on(
    cluster: LocalCluster, place: Place, data_dir: Path, **overrides: Any
) -> Iterator[Harness]:
    """Sandman in this process (the API through a test client, no background loops)
    with its sessions in ``place``; every session it started is ended afterwards."""
    settings = sandman_settings(data_dir, **{**place.settings(cluster), **overrides})
    core = Sandman(settings, announce=lambda _: None)
    client = TestClient(create_app(core, run_background=False))
    client.__enter__()
    core.runtime.prepare()
    try:
        yield Harness(core, client, data_dir, {"Authorization": f"Bearer {TOKEN}"})
    finally:
        try:
            core.sessions.end_all("test teardown")
        finally:
            client.__exit__(None, None, None)
            core.stop()


def pods(cluster: LocalCluster, namespace: str) -> list[dict[str, Any]]:
    """The namespace's pods that are not being deleted."""
    return [p for p in all_pods(cluster, namespace) if not p["metadata"].get("deletionTimestamp")]


def pod_of(cluster: LocalCluster, namespace: str, session_id: str) -> dict[str, Any]:
    """The one live pod of a session."""
    (pod,) = [
        p
        for p in pods(cluster, namespace)
        if p["metadata"]["labels"].get("sandman.session_id") == session_id
    ]
    return pod


def all_pods(cluster: LocalCluster, namespace: str) -> list[dict[str, Any]]:
    """The namespace's pods, those being deleted too."""
    listed = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)
    items: list[dict[str, Any]] = listed["items"]
    return items


def wait_for_no_pods(cluster: LocalCluster, namespace: str, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not all_pods(cluster, namespace):
            return True
        time.sleep(1)
    return False
