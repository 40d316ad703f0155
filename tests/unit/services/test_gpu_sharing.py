"""Sessions on shared GPUs through the real reservation: claims, the row's share,
the container's environment, quotas, and release at the end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.fakes.runtime import FakeRuntime

from sandman.domain import SessionStatus
from sandman.errors import CapacityExhausted, InvalidRequest, QuotaExceeded
from sandman.gpu.inventory import make_inventory
from sandman.gpu.sharing import GpuShare
from sandman.gpu.types import GpuInventory, GpuRequest
from sandman.policy.quotas import Quota, ScopeKind
from sandman.policy.units import request_slices
from sandman.services.container_spec import share_environment
from sandman.services.gateway_routes import describe_gpu
from sandman.services.gpu_claims import claims_from_rows
from sandman.services.quotas import Quotas, admission_check, session_slices
from sandman.services.requests import SessionRequest, check_gpu_request
from sandman.services.sessions import SessionService
from sandman.store.models import GpuClaim
from sandman.store.models import Session as SessionRow

SHARED = GpuRequest(shared=True)


@pytest.fixture
def shared_gpus(tmp_path: Path) -> GpuInventory:
    return make_inventory("simulated", topology="l4-x2-shared", seed="t")


def test_shared_is_exclusive_with_every_other_gpu_field() -> None:
    check_gpu_request(SHARED)
    for other in (
        GpuRequest(shared=True, mig_profile="1g.5gb"),
        GpuRequest(shared=True, mig_instance_uuid="MIG-x"),
        GpuRequest(shared=True, gpu_count=1),
        GpuRequest(shared=True, gpu_memory_gb=4),
    ):
        with pytest.raises(InvalidRequest, match=r"give at most one of \w+, shared"):
            check_gpu_request(other)


def test_the_environment_of_a_shared_session() -> None:
    assert share_environment(None) == {}
    assert share_environment(GpuShare("GPU-1", "time-slicing", 0.25, 23034, None)) == {
        "SANDMAN_GPU_SHARE": "0.25",
        "SANDMAN_GPU_SHARING": "time-slicing",
    }
    assert share_environment(GpuShare("GPU-1", "mps", 0.5, 11517, 50)) == {
        "SANDMAN_GPU_SHARE": "0.5",
        "SANDMAN_GPU_SHARING": "mps",
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "50",
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=11517M",
    }


def test_a_shared_request_counts_the_smallest_share_here(shared_gpus: GpuInventory) -> None:
    assert request_slices(SHARED, shared_gpus.devices()) == 1.75


def test_a_shared_session_is_reserved_recorded_and_released(
    make_service: Callable[..., SessionService],
    shared_gpus: GpuInventory,
    runtime: FakeRuntime,
) -> None:
    service = make_service("w1", inventory=shared_gpus)
    gpu = shared_gpus.devices()[0]  # time-sliced four ways
    created = service.create(SessionRequest(user_id="alice", gpu=SHARED))
    row = created.session
    assert row.gpu_share == 0.25 and row.mig_profile is None and row.gpu_uuid == gpu.uuid
    assert session_slices(row) == 1.75
    assert created.notes and created.notes[0].startswith("time-sliced GPU: no memory isolation")
    with service.db.read() as db:
        rows = list(db.scalars(select(GpuClaim)))
    assert [(r.gpu_uuid, r.unit) for r in rows] == [(gpu.uuid, "replica:0")]
    assert [c.replica for c in claims_from_rows(rows)] == [0]
    [container] = runtime.containers.values()
    assert container.launch.environment["SANDMAN_GPU_SHARE"] == "0.25"
    assert container.launch.environment["NVIDIA_VISIBLE_DEVICES"] == gpu.uuid

    bob = service.create(SessionRequest(user_id="bob", gpu=SHARED)).session
    assert bob.gpu_uuid == gpu.uuid  # the partly used GPU fills up first
    with service.db.read() as db:
        units = sorted(r.unit for r in db.scalars(select(GpuClaim)))
    assert units == ["replica:0", "replica:1"]

    service.end(row.id, SessionStatus.DELETED, "deleted by the user")
    with service.db.read() as db:
        left = [(r.session_id, r.unit) for r in db.scalars(select(GpuClaim))]
    assert left == [(bob.id, "replica:1")]


def test_all_replicas_held_is_capacity_exhausted(
    make_service: Callable[..., SessionService], shared_gpus: GpuInventory
) -> None:
    service = make_service("w1", inventory=shared_gpus)
    for n in range(6):  # 4 time-sliced + 2 MPS replicas
        service.create(SessionRequest(user_id=f"u{n}", gpu=SHARED))
    with pytest.raises(CapacityExhausted, match="every replica"):
        service.create(SessionRequest(user_id="late", gpu=SHARED))
    with pytest.raises(CapacityExhausted):
        service.create(SessionRequest(user_id="whole", gpu=GpuRequest(gpu_count=1)))


def test_mps_sessions_on_simulated_gpus_record_the_limits_without_a_daemon(
    make_service: Callable[..., SessionService],
    shared_gpus: GpuInventory,
    runtime: FakeRuntime,
) -> None:
    service = make_service("w1", inventory=shared_gpus)
    sessions = [service.create(SessionRequest(user_id=f"u{n}", gpu=SHARED)) for n in range(5)]
    mps = sessions[4]
    assert mps.session.gpu_share == 0.5
    assert mps.notes[0].startswith("MPS limits this session to 50% of the GPU's threads")
    env = next(
        c.launch.environment
        for c in runtime.containers.values()
        if c.launch.session_id == mps.session.id
    )
    assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "50"
    assert env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == f"0={23034 // 2}M"


def test_quotas_count_a_share_as_its_fraction(
    make_service: Callable[..., SessionService], shared_gpus: GpuInventory
) -> None:
    service = make_service("w1", inventory=shared_gpus)
    quotas = Quotas(service.db)
    service.admission_checks.append(admission_check(quotas))
    quotas.put(ScopeKind.USER, "alice", Quota(max_slices=1.75))
    service.create(SessionRequest(user_id="alice", gpu=SHARED))  # 1.75 of 1.75
    with service.db.read() as db:
        [row] = db.scalars(select(SessionRow))
        usage = quotas.usage(db, ScopeKind.USER, "alice", service.clock())
    assert usage.slices == 1.75 and session_slices(row) == 1.75
    quotas.put(ScopeKind.USER, "bob", Quota(max_slices=1.5))
    with pytest.raises(QuotaExceeded, match=r"1\.75"):
        service.create(SessionRequest(user_id="bob", gpu=SHARED))


def test_the_login_banner_names_the_share() -> None:
    row = SessionRow(gpu_uuid="GPU-1", gpu_name="NVIDIA L4", gpu_share=0.25)
    assert describe_gpu(row, simulated=True) == "0.25 of a shared NVIDIA L4 (simulated)"
