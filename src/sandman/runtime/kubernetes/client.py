"""Credentials for the API server, and the runtime and inventory made from settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandman.errors import ConfigurationError

if TYPE_CHECKING:
    from sandman.config import Settings
    from sandman.gpu.inventory.kubernetes import KubernetesInventory
    from sandman.runtime.kubernetes.backend import KubernetesRuntime

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def api_client(kube_config: str = "") -> Any:
    """An API client from ``kube_config``; empty: in-cluster credentials inside a pod,
    else ``$KUBECONFIG`` or ``~/.kube/config``."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        if kube_config:
            config.load_kube_config(config_file=kube_config, client_configuration=configuration)
        elif IN_CLUSTER_TOKEN.exists() and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(client_configuration=configuration)
    except (config.ConfigException, OSError) as exc:
        raise ConfigurationError(f"no Kubernetes credentials: {exc}") from exc
    return client.ApiClient(configuration)


def kubernetes_runtime(settings: Settings, deployment_id: str) -> KubernetesRuntime:
    from sandman.runtime.kubernetes.backend import KubernetesOptions, KubernetesRuntime
    from sandman.runtime.kubernetes.manifests import build_options

    options = KubernetesOptions(
        namespace=settings.kube_namespace,
        pending_timeout=settings.kube_pending_timeout,
        build=build_options(settings, deployment_id),
    )
    return KubernetesRuntime(api_client(settings.kube_config), options)


def kubernetes_inventory(settings: Settings, runtime: KubernetesRuntime) -> KubernetesInventory:
    """The GPUs the cluster's nodes advertise, less what other pods request."""
    from sandman.gpu.inventory.kubernetes import KubernetesInventory

    core = runtime.core
    serialize = runtime.api_client.sanitize_for_serialization

    def read() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        nodes = core.list_node().items
        pods = core.list_pod_for_all_namespaces(
            field_selector="status.phase!=Succeeded,status.phase!=Failed"
        ).items
        return [serialize(n) for n in nodes], [serialize(p) for p in pods]

    return KubernetesInventory(read)
