"""``/gpu``: seed 003's GPU fleet API (overview, devices, allocations, MIG by seed names).

Field names are the seed's (camelCase). An allocation is a session: ``namespace``
is the project it is charged to (it must exist: a Kubernetes namespace must exist
before a pod runs in it), ``podName`` a label, ``workloadType`` with
``requiredMemoryGb`` and ``useMig`` picks the share (``policy.workload``).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from sandman.accounts.policy import Action, Target, require
from sandman.api.auth import Who, allow
from sandman.api.openapi import errors
from sandman.api.routes.deps import sandman
from sandman.api.routes.sessions import _out, _quote_eta
from sandman.api.schemas import Name, UserId
from sandman.core import Sandman
from sandman.errors import CapacityExhausted, NotFound
from sandman.gpu.types import GpuRequest
from sandman.policy.workload import WORKLOAD_PATTERN, WorkloadType
from sandman.services.requests import SessionRequest
from sandman.services.seed_gpu import SeedGpu, node_name

router = APIRouter(tags=["gpu (seed 003)"])
App = Annotated[Sandman, Depends(sandman)]
POD_LABEL = "pod_name"


def fleet(app: App) -> SeedGpu:
    return SeedGpu(app.inventory, app.sessions, app.gpus, app.collector.latest, node_name())


Fleet = Annotated[SeedGpu, Depends(fleet)]


class AllocationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: Name = Field(description="The project charged; it must exist.")
    podName: str = Field(
        min_length=1, max_length=253, description="A name for the workload (label pod_name)."
    )
    workloadType: str = Field(
        WorkloadType.INTERACTIVE.value,
        description="training, inference, interactive or development, any case.",
        json_schema_extra={"pattern": WORKLOAD_PATTERN},
    )
    useMig: bool | None = Field(
        None,
        description="true: prefer a MIG slice; false: prefer a whole GPU; absent: the "
        "workload's preference. The other kind is given when none of this one has the "
        "memory.",
    )
    requiredMemoryGb: float | None = Field(
        None, gt=0, description="The least GPU memory in GB (absent: the workload's default)."
    )
    userId: UserId | None = Field(
        None, description="Whose session; default: the caller (required with the admin token)."
    )


@router.get("/gpu/overview", name="gpu.seed_overview", dependencies=[allow(Action.GPU_READ)])
def gpu_overview(service: Fleet) -> dict[str, Any]:
    """GPUs, active allocations, MIG instances, utilisation (the metrics collector's
    last pass; null before one) and GPUs by model (``H100_80GB``)."""
    return service.overview()


@router.get("/gpu/devices", name="gpu.seed_devices", dependencies=[allow(Action.GPU_READ)])
def gpu_devices(
    service: Fleet,
    nodeName: Annotated[
        str | None,
        Query(
            max_length=253,
            description="Only this node's (a cluster node on Kubernetes; else this host's name)",
        ),
    ] = None,
) -> list[dict[str, Any]]:
    """GPU devices with their MIG instances and who holds them."""
    return service.devices(nodeName)


@router.post(
    "/gpu/devices/{deviceId}/mig",
    name="gpu.seed_mig_create",
    status_code=status.HTTP_201_CREATED,
    responses=errors(403, 404, 409),
    dependencies=[allow(Action.GPU_MANAGE)],
)
def create_seed_mig(
    deviceId: str,
    service: Fleet,
    profiles: Annotated[
        list[Annotated[str, Field(max_length=64)]],
        Body(min_length=1, max_length=8, examples=[["H100_2G20GB", "H100_3G40GB"]]),
    ],
) -> dict[str, Any]:
    """Create MIG instances on a static GPU (``deviceId``: ``<node>-GPU-00`` or the GPU
    UUID) from seed names (``H100_2G20GB``) or the catalogue's (``2g.20gb``); the whole
    list or nothing. An unknown name is 400, listing the device's valid ones."""
    return service.create_mig(deviceId, profiles)


@router.post(
    "/gpu/allocations",
    name="gpu.seed_allocate",
    status_code=status.HTTP_201_CREATED,
    responses=errors(403, 404, 409, 503),
)
async def create_allocation(
    body: AllocationBody, app: App, caller: Who, request: Request, service: Fleet
) -> dict[str, Any]:
    """Start a session for the caller (or ``userId``) charged to project ``namespace``,
    with the GPU share the workload and memory call for; answers once it accepts SSH."""
    user_id = app.accounts.session_owner(caller, body.userId)
    require(caller, Action.SESSION_CREATE, Target(owner=user_id))
    try:
        await run_in_threadpool(app.accounts.teams.get_project, body.namespace)
    except NotFound:
        raise NotFound(
            f"namespace {body.namespace!r} names no project: create the project first "
            "(POST /api/v1/projects)"
        ) from None
    charge = await run_in_threadpool(
        app.accounts.prepare_session, caller, user_id, None, body.namespace
    )
    asked = SessionRequest(
        user_id=user_id,
        gpu=GpuRequest(gpu_memory_gb=body.requiredMemoryGb),
        team=charge.team,
        project=charge.project,
        labels={POD_LABEL: body.podName},
        workload_type=body.workloadType,
        use_mig=body.useMig,
    )
    try:
        created = await app.creator.create(asked)
    except CapacityExhausted as exc:
        await run_in_threadpool(_quote_eta, app, exc, asked)
        raise
    row = created.session
    request.state.audit_target = row.id
    request.state.audit_detail = {"user_id": user_id, "team": charge.team, "pod": body.podName}
    session = await asyncio.to_thread(_out, app, row)
    session["ssh_private_key"] = created.private_key
    session["notes"] = list(created.notes)
    gpu = session["parent_gpu_uuid"] or session["gpu_uuid"]
    grant = await run_in_threadpool(service.grant, gpu, row.mig_profile)
    return {
        "allocationId": row.id,
        "namespace": body.namespace,
        "podName": body.podName,
        "workloadType": row.labels.get("workload_type"),
        "useMig": row.mig_profile is not None,
        "requiredMemoryGb": body.requiredMemoryGb,
        **grant,
        "migInstanceId": row.mig_instance_uuid,
        "status": row.status,
        "session": session,
    }
