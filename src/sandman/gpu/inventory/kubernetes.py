"""The GPUs of a Kubernetes cluster, as the planner sees them.

On Kubernetes the NVIDIA device plugin, not Sandman, owns the devices: a node
advertises ``nvidia.com/gpu`` (whole GPUs) and, with the *mixed* MIG strategy,
``nvidia.com/mig-<profile>`` (instances that already exist), and the kubelet picks
which device a pod gets. So Sandman sees each node as:

- one **static MIG pool** per node holding one pre-created instance per advertised
  ``nvidia.com/mig-<profile>`` unit (Sandman never creates or destroys instances
  here; the cluster's MIG manager does), and
- one **whole GPU** per advertised ``nvidia.com/gpu`` unit.

Units that pods Sandman did not start request are taken out (the device plugin
would refuse them to Sandman's pods anyway). The identifiers are stable
functions of (node, resource, index), so claims in the database keep meaning the
same unit across restarts and replicas; which physical device backs a unit is the
kubelet's choice, reported once the pod runs.

``devices_from_nodes`` is pure (tested with dicts); ``KubernetesInventory`` only
lists nodes and pods.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sandman.errors import InvalidLayout, RuntimeUnavailable
from sandman.gpu.catalogue import find_model, nominal_gb
from sandman.gpu.types import GpuDevice, MigInstance, MigMode

log = logging.getLogger(__name__)

GPU_RESOURCE = "nvidia.com/gpu"
MIG_PREFIX = "nvidia.com/mig-"
PRODUCT_LABEL = "nvidia.com/gpu.product"
MEMORY_LABEL = "nvidia.com/gpu.memory"  # MiB per GPU, as GPU feature discovery labels it
MANAGED_LABEL = "sandman.managed"


def _uuid(prefix: str, *parts: object) -> str:
    h = hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()
    return f"{prefix}-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def pool_uuid(node: str) -> str:
    """The MIG pool standing for every advertised instance of ``node``."""
    return _uuid("GPU", "kubernetes", node, "mig")


def whole_uuid(node: str, index: int) -> str:
    return _uuid("GPU", "kubernetes", node, "gpu", index)


def instance_uuid(node: str, profile: str, index: int) -> str:
    return _uuid("MIG", "kubernetes", node, profile, index)


def _quantity(value: object) -> int:
    """Extended resources are whole numbers; anything else counts as none."""
    try:
        return max(0, int(str(value)))
    except ValueError:
        return 0


def requested(pods: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """``{node: {resource: units}}`` requested by the pods not started by Sandman
    that hold their node's resources (scheduled, not finished)."""
    used: dict[str, dict[str, int]] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        if (meta.get("labels") or {}).get(MANAGED_LABEL) == "true":
            continue
        spec = pod.get("spec") or {}
        node = spec.get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if not node or phase in ("Succeeded", "Failed"):
            continue
        for container in spec.get("containers") or []:
            limits = (container.get("resources") or {}).get("limits") or {}
            for name, value in limits.items():
                if name == GPU_RESOURCE or name.startswith(MIG_PREFIX):
                    per_node = used.setdefault(node, {})
                    per_node[name] = per_node.get(name, 0) + _quantity(value)
    return used


def devices_from_nodes(
    nodes: Sequence[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]] = ()
) -> list[GpuDevice]:
    """The planner's devices for these nodes (the API's JSON shape), minus what
    foreign ``pods`` request. Nodes that are unschedulable or not Ready are left out."""
    foreign = requested(pods)
    devices: list[GpuDevice] = []
    for node in sorted(nodes, key=lambda n: str((n.get("metadata") or {}).get("name", ""))):
        meta = node.get("metadata") or {}
        name = str(meta.get("name", ""))
        if not name or not _schedulable(node):
            continue
        labels = meta.get("labels") or {}
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        product = str(labels.get(PRODUCT_LABEL, "unknown"))
        model = find_model(product)
        model_key = model.key if model else product
        memory_mb = _quantity(labels.get(MEMORY_LABEL, 0)) or (model.memory_mib if model else 0)
        taken = foreign.get(name, {})
        instances: list[MigInstance] = []
        for resource in sorted(allocatable):
            if not resource.startswith(MIG_PREFIX):
                continue
            profile = resource[len(MIG_PREFIX) :]
            count = _quantity(allocatable[resource]) - taken.get(resource, 0)
            size = _slices(model_key, profile)
            for i in range(max(0, count)):
                instances.append(
                    MigInstance(
                        uuid=instance_uuid(name, profile, i),
                        profile=profile,
                        start=len(instances),
                        size=size,
                        memory_mb=_profile_memory_mb(model_key, profile),
                    )
                )
        if instances:
            devices.append(
                _device(
                    len(devices),
                    pool_uuid(name),
                    f"{name}: {product} (MIG)",
                    model_key,
                    memory_mb,
                    MigMode.STATIC,
                    tuple(instances),
                )
            )
        whole = _quantity(allocatable.get(GPU_RESOURCE, 0)) - taken.get(GPU_RESOURCE, 0)
        for i in range(max(0, whole)):
            devices.append(
                _device(
                    len(devices),
                    whole_uuid(name, i),
                    f"{name}: {product}",
                    model_key,
                    memory_mb,
                    MigMode.DISABLED,
                    (),
                )
            )
    return devices


def node_of(device_name: str) -> str:
    """The node in a device's name (``"<node>: <product>"``)."""
    return device_name.split(":", 1)[0]


def _device(
    index: int,
    uuid: str,
    name: str,
    model: str,
    memory_mb: int,
    mode: MigMode,
    instances: tuple[MigInstance, ...],
) -> GpuDevice:
    return GpuDevice(
        index=index,
        uuid=uuid,
        name=name,
        model=model,
        memory_total_mb=memory_mb,
        memory_used_mb=0,
        utilization_percent=0,
        temperature_c=0,
        power_usage_w=0.0,
        power_limit_w=0.0,
        mig_mode=mode,
        instances=instances,
        advertised_only=True,
    )


def _slices(model_key: str, profile: str) -> int:
    model = find_model(model_key)
    found = model.profile(profile) if model else None
    return found.memory_slices if found else 1


def _profile_memory_mb(model_key: str, profile: str) -> int:
    model = find_model(model_key)
    found = model.profile(profile) if model else None
    return found.memory_mib if found else nominal_gb(profile) * 1024


def _schedulable(node: Mapping[str, Any]) -> bool:
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


class KubernetesInventory:
    """``GpuInventory`` over the cluster's nodes (read a few seconds apart at most)."""

    backend = "kubernetes"
    simulated = False

    def __init__(
        self,
        read: Callable[[], tuple[list[dict[str, Any]], list[dict[str, Any]]]],
        max_age: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read  # () -> (nodes, pods) as the API's JSON
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, list[GpuDevice]] | None = None

    def devices(self) -> list[GpuDevice]:
        with self._lock:
            now = self._clock()
            if self._cached is not None and now - self._cached[0] < self._max_age:
                return list(self._cached[1])
            try:
                nodes, pods = self._read()
            except RuntimeUnavailable:
                raise
            except Exception as exc:  # the client's errors are many; one answer
                raise RuntimeUnavailable(f"listing the cluster's nodes failed: {exc}") from exc
            devices = devices_from_nodes(nodes, pods)
            self._cached = (now, devices)
            return list(devices)

    def create_instance(self, gpu_uuid: str, profile: str, start: int) -> MigInstance:
        raise InvalidLayout(
            "on Kubernetes the cluster's MIG manager makes MIG instances; Sandman only "
            "requests the ones its nodes advertise"
        )

    def destroy_instance(self, gpu_uuid: str, instance_uuid: str) -> None:
        return None

    def close(self) -> None:
        return None
