"""Seed 003's GPU fleet API over Sandman's parts: the overview, devices by node, MIG
instances by seed profile names, and allocations as sessions.

Seed 003 runs on Kubernetes: there a device's node is the cluster node that
advertises it; on Docker the machine is one node, named after the host. A device's
seed id is ``<node>-GPU-<index, two digits>`` (``worker-01-GPU-00``, as the seed's
metrics label ``device_id``); its GPU UUID is accepted too.

Nothing here asks the GPUs at request time: utilisation comes from the metrics
collector's latest pass, the rest from the inventory and the claims.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sandman.errors import NotFound
from sandman.gpu.catalogue import MIB_PER_GIB, find_model
from sandman.gpu.inventory.kubernetes import node_of as kubernetes_node_of
from sandman.gpu.seed_names import catalogue_profile, seed_model_name, seed_profile_name
from sandman.gpu.types import GpuDevice, GpuInventory, MigInstance, MigMode
from sandman.observe.samples import GpuSample, MetricsSnapshot
from sandman.policy.units import WHOLE, profile_slices
from sandman.services.gpus import GpuAdmin
from sandman.services.sessions import SessionService


def node_name() -> str:
    """The node's name: on Docker, the host's."""
    return socket.gethostname().split(".")[0] or "localhost"


def device_id(node: str, device: GpuDevice) -> str:
    return f"{node}-GPU-{device.index:02d}"


def model_name(device: GpuDevice) -> str:
    """The seed's model key (``H100_80GB``); a model the catalogue lacks as reported."""
    model = find_model(device.model)
    return seed_model_name(model.key if model else device.model)


def gpu_utilization(device: GpuDevice, samples: Sequence[GpuSample]) -> float | None:
    """One GPU's utilisation, 0-100: the GPU's own reading, or on a MIG GPU (which
    has none) its instances' engine activity weighted by their share of the GPU."""
    whole = [s for s in samples if s.uuid == device.uuid and s.util_percent is not None]
    if whole:
        return whole[0].util_percent
    model = find_model(device.model)
    parts = [s for s in samples if s.parent_uuid == device.uuid and s.gr_engine_active is not None]
    if not parts:
        return None
    total = 0.0
    for part in parts:
        share = 1.0
        if model is not None and part.mig_profile and model.profile(part.mig_profile):
            share = profile_slices(model, part.mig_profile) / WHOLE
        total += (part.gr_engine_active or 0.0) * share * 100
    return min(total, 100.0)


def overall_utilization(
    devices: Sequence[GpuDevice], snapshot: MetricsSnapshot | None
) -> float | None:
    """The mean utilisation of the GPUs measured in the last pass; None before one."""
    if snapshot is None:
        return None
    readings = [gpu_utilization(d, snapshot.gpus) for d in devices]
    known = [r for r in readings if r is not None]
    return round(sum(known) / len(known), 1) if known else None


def overview(
    devices: Sequence[GpuDevice], allocations: int, snapshot: MetricsSnapshot | None
) -> dict[str, Any]:
    """Seed 003's ``GET /gpu/overview`` body."""
    return {
        "totalGpuDevices": len(devices),
        "activeAllocations": allocations,
        "totalMigInstances": sum(len(d.instances) for d in devices),
        "overallGpuUtilization": overall_utilization(devices, snapshot),
        "devicesByModel": dict(sorted(Counter(model_name(d) for d in devices).items())),
    }


def _instance_out(
    device: GpuDevice, instance: MigInstance, owners: dict[str, str]
) -> dict[str, Any]:
    model = find_model(device.model)
    owner = owners.get(instance.uuid)
    return {
        "instanceId": instance.uuid,
        "migProfile": seed_profile_name(model, instance.profile) if model else instance.profile,
        "profile": instance.profile,
        "memoryGb": round(instance.memory_mb / MIB_PER_GIB, 2),
        "start": instance.start,
        "size": instance.size,
        "allocated": owner is not None,
        "sessionId": owner,
    }


def device_out(
    node: str, device: GpuDevice, owners: dict[str, str], snapshot: MetricsSnapshot | None
) -> dict[str, Any]:
    """One device as seed 003's inventory shows it (camelCase)."""
    model = find_model(device.model)
    samples = snapshot.gpus if snapshot else ()
    return {
        "deviceId": device_id(node, device),
        "nodeName": node,
        "gpuIndex": device.index,
        "gpuUuid": device.uuid,
        "modelName": model_name(device),
        "deviceName": device.name,
        "architecture": model.architecture if model else None,
        "memoryGb": round(device.memory_total_mb / MIB_PER_GIB, 2),
        "memoryUsedGb": round(device.memory_used_mb / MIB_PER_GIB, 2),
        "gpuUtilization": gpu_utilization(device, samples),
        "temperatureC": device.temperature_c,
        "powerUsageW": device.power_usage_w,
        "powerLimitW": device.power_limit_w,
        "migCapable": bool(model and model.mig_capable),
        "migEnabled": device.mig_mode is not MigMode.DISABLED,
        "migMode": device.mig_mode.value,
        "migInstances": [
            _instance_out(device, i, owners)
            for i in sorted(device.instances, key=lambda i: i.start)
        ],
        "allocated": device.uuid in owners,
        "sessionId": owners.get(device.uuid),
        "simulated": device.simulated,
    }


@dataclass
class SeedGpu:
    """The seed 003 reads and MIG writes, over the inventory, sessions and GPU admin."""

    inventory: GpuInventory
    sessions: SessionService
    gpus: GpuAdmin
    latest: Callable[[], MetricsSnapshot | None]
    node: str

    def overview(self) -> dict[str, Any]:
        active = self.sessions.list_sessions("active")
        held = sum(1 for row in active if row.gpu_uuid)
        return overview(self.inventory.devices(), held, self.latest())

    def node_of(self, device: GpuDevice) -> str:
        """The device's node: on Kubernetes the cluster node advertising it, else this
        machine."""
        if self.inventory.backend == "kubernetes":
            return kubernetes_node_of(device.name)
        return self.node

    def devices(self, node: str | None) -> list[dict[str, Any]]:
        """The devices of ``node`` (all without one); on Docker this machine is the one
        node, so another name has none."""
        owners = {
            k: v for k, v in self.sessions.claimed_by().items() if v and not v.startswith("admin:")
        }
        snapshot = self.latest()
        found = ((self.node_of(d), d) for d in self.inventory.devices())
        return [
            device_out(where, d, owners, snapshot)
            for where, d in found
            if node is None or node == where
        ]

    def device(self, wanted: str) -> GpuDevice:
        for device in self.inventory.devices():
            if wanted in (device.uuid, device_id(self.node_of(device), device)):
                return device
        where = "" if self.inventory.backend == "kubernetes" else f" on node {self.node}"
        raise NotFound(f"no GPU device {wanted!r}{where}")

    def grant(self, gpu_uuid: str | None, profile: str | None) -> dict[str, Any]:
        """Where a session's GPU share is, in the seed's words: its device's id and its
        MIG profile's seed name (``H100_2G20GB``), null for a whole GPU or none."""
        device = next((d for d in self.inventory.devices() if d.uuid == gpu_uuid), None)
        if device is None:
            return {"deviceId": None, "migProfile": profile}
        model = find_model(device.model)
        seed = seed_profile_name(model, profile) if model and profile else profile
        return {"deviceId": device_id(self.node_of(device), device), "migProfile": seed}

    def create_mig(self, wanted: str, names: Sequence[str]) -> dict[str, Any]:
        """Create MIG instances named the seed's way (``H100_2G20GB``) or the
        catalogue's (``2g.20gb``) on a static GPU; the whole list or nothing."""
        device = self.device(wanted)
        model = find_model(device.model)
        profiles = list(names)
        if model is not None and model.mig_capable:
            profiles = [catalogue_profile(model, name) for name in names]
        created = self.gpus.create_instances(device.uuid, profiles)
        owners: dict[str, str] = {}
        return {
            "deviceId": device_id(self.node_of(device), device),
            "gpuUuid": device.uuid,
            "created": [_instance_out(device, i, owners) for i in created],
        }
