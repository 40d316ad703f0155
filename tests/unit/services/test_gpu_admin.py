"""Admin MIG operations take the same claim rows as sessions, so they never race."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.fakes.runtime import FakeRuntime

from sandman.config import Settings
from sandman.errors import CapacityExhausted, Conflict
from sandman.gpu.inventory import make_inventory
from sandman.gpu.types import GpuRequest
from sandman.services.gpus import GpuAdmin
from sandman.services.host_keys import HostKeys
from sandman.services.requests import SessionRequest
from sandman.services.sessions import SessionService
from sandman.store.database import Database


@pytest.fixture
def service(tmp_path: Path) -> SessionService:
    db = Database(f"sqlite:///{tmp_path}/sandman.db")
    db.migrate()
    settings = Settings(data_dir=tmp_path, admin_token="t", ssh_mode="direct")
    inventory = make_inventory(
        "simulated", topology="a100-40gb-7x1g", state_path=tmp_path / "gpus.json", seed="t"
    )
    return SessionService(settings, db, FakeRuntime(), inventory, HostKeys(tmp_path), "dep", "w")


def test_reservations_and_destroys_racing_never_share_an_instance(
    service: SessionService,
) -> None:
    admin = GpuAdmin(service)
    (device,) = service.inventory.devices()
    instances = [i.uuid for i in device.instances]
    assert len(instances) == 7
    barrier = threading.Barrier(14)

    def reserve(i: int) -> str | None:
        barrier.wait()
        request = SessionRequest(user_id=f"u{i}", gpu=GpuRequest(mig_profile="1g.5gb"))
        try:
            return service.reserve(request).session.mig_instance_uuid
        except CapacityExhausted:
            return None

    def destroy(instance: str) -> str | None:
        barrier.wait()
        try:
            admin.destroy_instance(device.uuid, instance)
        except Conflict:
            return None
        return instance

    with ThreadPoolExecutor(max_workers=14) as pool:
        held = [f for f in (pool.submit(reserve, i) for i in range(7))]
        gone = [f for f in (pool.submit(destroy, uuid) for uuid in instances)]
        granted = {f.result() for f in held} - {None}
        destroyed = {f.result() for f in gone} - {None}
    assert granted and granted.isdisjoint(destroyed)
    assert len(granted) + len(destroyed) <= 7
    left = {i.uuid for i in service.inventory.devices()[0].instances}
    assert granted <= left  # every session's instance still exists
    assert destroyed.isdisjoint(left)
    assert not [c for c in service.claims() if c.instance_uuid in destroyed]
    # the admin's own claim rows are gone once each operation ends
    assert set(service.claimed_by().values()) <= {r.id for r in service.list_sessions("active")}


def test_destroying_a_held_instance_is_refused_with_its_session(service: SessionService) -> None:
    admin = GpuAdmin(service)
    reservation = service.reserve(
        SessionRequest(user_id="alice", gpu=GpuRequest(mig_profile="1g.5gb"))
    )
    instance = reservation.session.mig_instance_uuid
    assert instance is not None
    (device,) = service.inventory.devices()
    with pytest.raises(Conflict, match=reservation.session.id):
        admin.destroy_instance(device.uuid, instance)
    assert instance in {i.uuid for i in service.inventory.devices()[0].instances}
