"""GPU grants as database rows: what a session holds, and the session's GPU columns."""

from __future__ import annotations

from collections.abc import Sequence

from sandman.gpu.planner import REPLICA_UNIT, claim_units
from sandman.gpu.types import Allocation, Claim, GpuDevice
from sandman.store.models import GpuClaim


def claims_from_rows(rows: Sequence[GpuClaim]) -> list[Claim]:
    """One ``Claim`` per grant (a grant spans several unit rows). A grant whose only
    unit is ``replica:<k>`` is that replica of a shared GPU; a whole grant of a shared
    GPU holds ``gpu`` and every replica, and stays a whole grant."""
    grants: dict[tuple[str, str | None, int], tuple[GpuClaim, set[str]]] = {}
    for row in rows:
        key = (row.gpu_uuid, row.session_id, row.start)
        grants.setdefault(key, (row, set()))[1].add(row.unit)
    claims = []
    for row, units in grants.values():
        replica = None
        if len(units) == 1 and (unit := next(iter(units))).startswith(REPLICA_UNIT):
            replica = int(unit.removeprefix(REPLICA_UNIT))
        claims.append(
            Claim(row.gpu_uuid, row.start, row.size, row.profile, row.instance_uuid, replica)
        )
    return claims


def cluster_placement(node: str | None) -> str:
    """``placement_reason`` where the cluster (Kubernetes), not Sandman, picks the node
    and the device: Sandman only counted a unit the nodes advertise."""
    if node:
        return f"placed by Kubernetes on node {node}"
    return "placed by Kubernetes (the node is known once the pod is scheduled)"


def session_gpu_fields(
    allocations: list[Allocation], devices: list[GpuDevice], cluster_places: bool = False
) -> dict[str, object]:
    """The session row's GPU columns (the first grant names the GPU); with
    ``cluster_places`` the placement is the cluster's, to be named once it is made."""
    if not allocations:
        return {}
    names = {d.uuid: d.name for d in devices}
    first = allocations[0]
    return {
        "gpu_parent_uuid": ",".join(a.gpu_uuid for a in allocations),
        "gpu_name": names.get(first.gpu_uuid),
        "mig_profile": first.profile if first.kind != "whole_gpu" else None,
        "mig_instance_uuid": first.instance_uuid,
        "gpu_fallback": any(a.fallback for a in allocations),
        "gpu_share": first.share,
        "placement_reason": cluster_placement(None)
        if cluster_places
        else "; ".join(a.reason for a in allocations if a.reason) or None,
    }


def claim_rows(session_id: str, allocation: Allocation) -> list[GpuClaim]:
    """One row per unit of the grant; the table's key makes a unit holdable once."""
    return [
        GpuClaim(
            gpu_uuid=allocation.gpu_uuid,
            unit=unit,
            session_id=session_id,
            start=allocation.start,
            size=allocation.size,
            profile=allocation.profile if allocation.kind != "whole_gpu" else None,
            instance_uuid=allocation.instance_uuid,
            created_instance=False,
        )
        for unit in claim_units(allocation)
    ]
