"""``/gpus``: inventory, MIG profiles, free capacity and static MIG management."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, status
from pydantic import BaseModel, ConfigDict, Field

from sandman.accounts.policy import Action
from sandman.api.auth import allow
from sandman.api.openapi import errors
from sandman.api.routes.deps import sandman
from sandman.core import Sandman
from sandman.gpu.catalogue import GpuModel, MigProfile, find_model
from sandman.gpu.planner import free_summary
from sandman.gpu.sharing import sharing_summary
from sandman.gpu.types import GpuDevice, MigMode

router = APIRouter(tags=["gpus"])
App = Annotated[Sandman, Depends(sandman)]
MIB = 1024 * 1024


class CreateMigBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profiles: list[str] = Field(min_length=1, max_length=8, description='e.g. ["1g.5gb"]')


def _profile_out(model: GpuModel, profile: MigProfile) -> dict[str, Any]:
    share = (
        f"{profile.compute_slices}/7"
        if model.memory_slices == 8
        else (f"{profile.compute_slices}/{model.memory_slices}")
    )
    return {
        "name": profile.name,
        "model": model.key,
        "profile_id": profile.profile_id,
        "compute_slices": profile.compute_slices,
        "memory_slices": profile.memory_slices,
        "memory_size": profile.memory_mib * MIB,
        "max_count": profile.max_count,
        "placements": [{"start": s, "size": profile.size} for s in profile.starts],
        "description": f"{share} GPU, {profile.memory_gb}GB memory",
    }


def _gpu_out(device: GpuDevice, owners: dict[str, str], held: int = 0) -> dict[str, Any]:
    model = find_model(device.model)
    slots: list[dict[str, Any]] = []
    for instance in sorted(device.instances, key=lambda i: i.start):
        slots.append(
            {
                "uuid": instance.uuid,
                "profile": instance.profile,
                "start": instance.start,
                "size": instance.size,
                "session_id": owners.get(instance.uuid),
            }
        )
    return {
        "index": device.index,
        "uuid": device.uuid,
        "name": device.name,
        "model": device.model,
        "architecture": model.architecture if model else None,
        "memory_total": device.memory_total_mb * MIB,
        "memory_used": device.memory_used_mb * MIB,
        "memory_free": device.memory_free_mb * MIB,
        "utilization": device.utilization_percent,
        "temperature": device.temperature_c,
        "power_usage": device.power_usage_w,
        "power_limit": device.power_limit_w,
        "mig_enabled": device.mig_mode != MigMode.DISABLED,
        "mig_mode": device.mig_mode.value,
        "mig_pending": device.mig_pending,
        "memory_slices": model.memory_slices if model else 0,
        "mig_instances": [
            {
                "uuid": i.uuid,
                "profile": i.profile,
                "memory": i.memory_mb * MIB,
                "start": i.start,
                "size": i.size,
                "allocated": i.uuid in owners,
                "session_id": owners.get(i.uuid),
            }
            for i in device.instances
        ],
        "mig_layout": slots,
        "allocated": device.uuid in owners,
        "session_id": owners.get(device.uuid),
        "simulated": device.simulated,
        # A shared GPU (time-slicing or MPS): its replicas, how many are held.
        "sharing": sharing_summary(device.sharing, held) if device.sharing else None,
    }


@router.get("/gpus", name="gpu.list", dependencies=[allow(Action.GPU_READ)])
def list_gpus(app: App) -> dict[str, Any]:
    owners = app.sessions.claimed_by()
    held = Counter(c.gpu_uuid for c in app.sessions.claims() if c.replica is not None)
    gpus = [_gpu_out(d, owners, held[d.uuid]) for d in app.inventory.devices()]
    return {
        "gpus": gpus,
        "count": len(gpus),
        "backend": app.inventory.backend,
        "simulated": app.inventory.simulated,
    }


@router.get("/gpus/profiles", name="gpu.profiles", dependencies=[allow(Action.GPU_READ)])
def list_profiles(app: App) -> dict[str, Any]:
    """MIG profiles of every model present (a profile name can differ in size by model)."""
    seen: dict[str, GpuModel] = {}
    for device in app.inventory.devices():
        model = find_model(device.model)
        if model is not None and model.mig_capable:
            seen.setdefault(model.key, model)
    profiles = [_profile_out(m, p) for m in seen.values() for p in m.profiles]
    return {"profiles": profiles, "count": len(profiles), "models": sorted(seen)}


@router.get("/gpus/available", name="gpu.available", dependencies=[allow(Action.GPU_READ)])
def available(app: App) -> dict[str, Any]:
    devices = app.inventory.devices()
    owners = app.sessions.claimed_by()
    instances = []
    for device in devices:
        model = find_model(device.model)
        for instance in device.instances:
            if instance.uuid in owners:
                continue
            profile = model.profile(instance.profile) if model else None
            instances.append(
                {
                    "uuid": instance.uuid,
                    "profile": instance.profile,
                    "memory": instance.memory_mb * MIB,
                    "compute_slices": profile.compute_slices if profile else None,
                    "memory_slices": instance.size,
                    "parent_gpu": device.uuid,
                    "allocated": False,
                }
            )
    whole = [
        {"uuid": d.uuid, "name": d.name, "memory": d.memory_total_mb * MIB}
        for d in devices
        if d.mig_mode == MigMode.DISABLED and d.uuid not in owners
    ]
    summary = free_summary(devices, app.sessions.claims())
    return {
        "available_instances": instances,
        "count": len(instances),
        "whole_gpus": whole,
        "free": summary,
    }


@router.post(
    "/gpus/{gpu_uuid}/mig",
    name="gpu.mig_create",
    status_code=status.HTTP_201_CREATED,
    responses=errors(403, 404, 409),
    dependencies=[allow(Action.GPU_MANAGE)],
)
def create_mig_instances(gpu_uuid: str, body: CreateMigBody, app: App) -> dict[str, Any]:
    """Create MIG instances (for the static strategy); the whole list or nothing."""
    created = app.gpus.create_instances(gpu_uuid, body.profiles)
    return {
        "created": [
            {"uuid": i.uuid, "profile": i.profile, "start": i.start, "size": i.size}
            for i in created
        ]
    }


@router.delete(
    "/gpus/{gpu_uuid}/mig/{instance_uuid}",
    name="gpu.mig_destroy",
    responses=errors(403, 404, 409),
    dependencies=[allow(Action.GPU_MANAGE)],
)
def destroy_mig_instance(gpu_uuid: str, instance_uuid: str, app: App) -> dict[str, Any]:
    app.gpus.destroy_instance(gpu_uuid, instance_uuid)
    return {"message": f"MIG instance {instance_uuid} destroyed"}
