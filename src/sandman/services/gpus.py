"""Admin MIG operations (static strategy), under the same claim rows as sessions.

Before an admin creates or destroys an instance, the units it spans are claimed
in ``gpu_claims`` (``held_by`` an admin operation, no session), exactly as a
session's reservation claims them. The table's key makes the two exclusive: an
instance a session is reserving cannot be destroyed under it, and a session
cannot be handed an instance while it is being destroyed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from sandman.errors import Conflict, NotFound
from sandman.gpu.catalogue import find_model
from sandman.gpu.planner import claim_units
from sandman.gpu.topology import place_instances
from sandman.gpu.types import Allocation, GpuDevice, MigInstance, MigMode
from sandman.services.sessions import SessionService
from sandman.store.models import GpuClaim


def _units(gpu_uuid: str, profile: str, start: int, size: int) -> list[str]:
    return claim_units(Allocation(gpu_uuid, "mig_instance", profile, start, size, 0))


class GpuAdmin:
    def __init__(self, sessions: SessionService) -> None:
        self.sessions = sessions
        self.inventory = sessions.inventory
        self.db = sessions.db

    def device(self, gpu_uuid: str) -> GpuDevice:
        for device in self.inventory.devices():
            if device.uuid == gpu_uuid:
                return device
        raise NotFound(f"no GPU {gpu_uuid!r}")

    @contextmanager
    def _holding(self, gpu_uuid: str, spans: list[tuple[str, int, int]]) -> Iterator[None]:
        """Claim the units of ``(profile, start, size)`` spans for the operation's length."""
        holder = f"admin:{uuid.uuid4().hex[:12]}"
        try:
            with self.db.transaction() as db:
                for profile, start, size in spans:
                    for unit in _units(gpu_uuid, profile, start, size):
                        db.add(
                            GpuClaim(
                                gpu_uuid=gpu_uuid,
                                unit=unit,
                                session_id=None,
                                start=start,
                                size=size,
                                profile=profile,
                                held_by=holder,
                            )
                        )
                db.flush()
        except IntegrityError:
            owners = self.sessions.claimed_by()
            busy = sorted({owners.get(gpu_uuid, "")} - {""})
            raise Conflict(
                f"GPU {gpu_uuid}: those slices are held by a session or another admin "
                f"operation right now{' (' + ', '.join(busy) + ')' if busy else ''}; "
                "try again once it has ended"
            ) from None
        try:
            yield
        finally:
            with self.db.transaction() as db:
                db.execute(delete(GpuClaim).where(GpuClaim.held_by == holder))

    def create_instances(self, gpu_uuid: str, profiles: list[str]) -> list[MigInstance]:
        """Create MIG instances (static strategy); the whole list or nothing."""
        device = self.device(gpu_uuid)
        model = find_model(device.model)
        if model is None or not model.mig_capable or device.mig_mode == MigMode.DISABLED:
            raise Conflict(f"GPU {gpu_uuid} does not have MIG enabled")
        if device.mig_mode == MigMode.DYNAMIC:
            raise Conflict(
                f"GPU {gpu_uuid} uses the dynamic strategy: Sandman creates and destroys its "
                "MIG instances on demand; switch it to static to manage instances by hand"
            )
        existing = [f"{i.profile}@{i.start}" for i in device.instances]
        placed = place_instances(model, existing + profiles, f"GPU {gpu_uuid}")
        taken = {(i.profile, i.start) for i in device.instances}
        planned = [(p.profile, p.start) for p in placed if (p.profile, p.start) not in taken]
        spans = [(name, start, model.profile(name).size) for name, start in planned]  # type: ignore[union-attr]
        created: list[MigInstance] = []
        with self._holding(gpu_uuid, spans):
            try:
                for name, start in planned:
                    created.append(self.inventory.create_instance(gpu_uuid, name, start))
            except BaseException:
                for instance in created:
                    self.inventory.destroy_instance(gpu_uuid, instance.uuid)
                raise
        return created

    def destroy_instance(self, gpu_uuid: str, instance_uuid: str) -> None:
        """Destroy a free instance; refused while a session holds or is reserving it."""
        device = self.device(gpu_uuid)
        instance = next((i for i in device.instances if i.uuid == instance_uuid), None)
        if instance is None:
            raise NotFound(f"no MIG instance {instance_uuid!r} on GPU {gpu_uuid}")
        with self.db.read() as db:
            owner = db.scalars(
                select(GpuClaim.session_id).where(GpuClaim.instance_uuid == instance_uuid)
            ).first()
        if owner:
            raise Conflict(f"MIG instance {instance_uuid} is allocated to session {owner}")
        with self._holding(gpu_uuid, [(instance.profile, instance.start, instance.size)]):
            self.inventory.destroy_instance(gpu_uuid, instance_uuid)
