"""Sessions where Kubernetes, not Sandman, picks the node and the device: the
placement reason names the node once the pod runs, a lost session carries the pod's
last event, its GPU labels stay empty until known, and the cost ledger charges from
the admission's commit to the pod's termination. Docker's figures are unchanged."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import cast

import pytest
from sqlalchemy import select
from tests.fakes.pods import FakePodRuntime, gpu_node
from tests.fakes.runtime import FakeRuntime
from tests.unit.services.conftest import Clock, leftovers

from sandman.accounting.rates import build_rates
from sandman.accounting.service import UsageLedger
from sandman.domain import SessionStatus
from sandman.gpu.inventory.kubernetes import KubernetesInventory
from sandman.gpu.types import GpuInventory, GpuRequest
from sandman.observe.collector import holders_of
from sandman.observe.exposition import session_families
from sandman.observe.samples import MetricsSnapshot
from sandman.services.gpus import GpuAdmin
from sandman.services.reconciler import Reconciler
from sandman.services.requests import SessionRequest
from sandman.services.seed_gpu import SeedGpu
from sandman.services.sessions import SessionService
from sandman.store.models import LedgerEvent

EVICTED = "Evicted: The node was low on resource: memory."
MIG = GpuRequest(mig_profile="1g.5gb")


@pytest.fixture
def pods() -> FakePodRuntime:
    return FakePodRuntime(node="gpu-node-2")


@pytest.fixture
def cluster() -> KubernetesInventory:
    nodes = [
        gpu_node("gpu-node-1", {"nvidia.com/mig-1g.5gb": "2"}),
        gpu_node("gpu-node-2", {"nvidia.com/mig-1g.5gb": "7"}),
    ]
    return KubernetesInventory(lambda: (nodes, []), max_age=0)


@pytest.fixture
def kube(
    make_service: Callable[..., SessionService],
    pods: FakePodRuntime,
    cluster: KubernetesInventory,
) -> SessionService:
    return make_service("k1", runtime=pods, inventory=cluster)


def ledger_of(service: SessionService, clock: Clock) -> UsageLedger:
    ledger = UsageLedger(service.db, build_rates(), clock=clock)
    service.grant_hooks.append(ledger.on_grant)
    service.release_hooks.append(ledger.on_release)
    return ledger


def ledger_events(service: SessionService, session_id: str) -> dict[str, datetime]:
    with service.db.read() as db:
        found = db.scalars(select(LedgerEvent).where(LedgerEvent.session_id == session_id))
        return {e.kind: e.at for e in found}


def reconcile(service: SessionService) -> list[str]:
    report = Reconciler(service, stale_after=60, grace=0, hostname="host-a").run_once()
    assert report.errors == []
    return report.ended_sessions


# ------------------------------------------------------------------ placement
def test_the_placement_reason_names_the_node_kubernetes_picked_once_the_pod_runs(
    kube: SessionService, pods: FakePodRuntime
) -> None:
    reservation = kube.reserve(SessionRequest(user_id="alice", gpu=MIG))
    assert reservation.session.placement_reason == (
        "placed by Kubernetes (the node is known once the pod is scheduled)"
    )
    row = kube.launch(reservation).session
    assert row.status == SessionStatus.RUNNING
    assert row.placement_reason == "placed by Kubernetes on node gpu-node-2"
    assert kube.get(row.id).placement_reason == "placed by Kubernetes on node gpu-node-2"


def test_the_launch_names_the_granted_gpus_model_for_node_selectors_per_model(
    kube: SessionService, pods: FakePodRuntime, service: SessionService
) -> None:
    row = kube.create(SessionRequest(user_id="alice", gpu=MIG)).session
    (container,) = [c for c in pods.containers.values() if c.state.id == row.container_id]
    assert container.launch.gpu.model == "A100-40GB"
    bare = kube.create(SessionRequest(user_id="bob", gpu=GpuRequest(gpu_count=0))).session
    (plain,) = [c for c in pods.containers.values() if c.state.id == bare.container_id]
    assert plain.launch.gpu.model is None
    # Docker places nothing by model: it is not asked for
    on_docker = service.create(SessionRequest(user_id="carol", gpu=MIG)).session
    runtime = service.runtime
    assert isinstance(runtime, FakeRuntime)
    (docker,) = [c for c in runtime.containers.values() if c.state.id == on_docker.container_id]
    assert docker.launch.gpu.model is None


def test_a_session_without_a_gpu_has_no_placement_reason_on_kubernetes(
    kube: SessionService,
) -> None:
    row = kube.create(SessionRequest(user_id="alice", gpu=GpuRequest(gpu_count=0))).session
    assert row.status == SessionStatus.RUNNING and row.placement_reason is None


def test_docker_keeps_the_planners_placement_reason(service: SessionService) -> None:
    row = service.create(SessionRequest(user_id="alice", gpu=MIG)).session
    assert row.placement_reason and "Kubernetes" not in row.placement_reason


# ----------------------------------------------------------------- reconciler
def test_an_evicted_pod_ends_its_session_lost_with_the_pods_last_event(
    kube: SessionService, pods: FakePodRuntime, clock: Clock
) -> None:
    row = kube.create(SessionRequest(user_id="alice", gpu=MIG)).session
    other = kube.create(SessionRequest(user_id="bob", gpu=MIG)).session
    pods.fail(row.container_id or "", "failed (Evicted)", EVICTED, clock.now)
    assert reconcile(kube) == [row.id]
    ended = kube.get(row.id)
    assert ended.status == SessionStatus.LOST
    assert ended.end_reason == (
        "the session's container is failed (Evicted) (exit code None); last event: " + EVICTED
    )
    assert leftovers(kube.db, pods, row.id) == []
    assert kube.get(other.id).status == SessionStatus.RUNNING


def test_an_out_of_mig_pod_carries_the_kubelets_words(
    kube: SessionService, pods: FakePodRuntime, clock: Clock
) -> None:
    row = kube.create(SessionRequest(user_id="alice", gpu=MIG)).session
    event = "OutOfnvidia.com/mig-1g.5gb: Node didn't have enough resource: nvidia.com/mig-1g.5gb"
    pods.fail(row.container_id or "", "failed (OutOfnvidia.com/mig-1g.5gb)", event, None)
    assert reconcile(kube) == [row.id]
    reason = kube.get(row.id).end_reason or ""
    assert reason.endswith("; last event: " + event)


def test_a_deleted_pod_ends_its_session_with_todays_reason_and_no_event_read(
    kube: SessionService, pods: FakePodRuntime
) -> None:
    row = kube.create(SessionRequest(user_id="alice", gpu=MIG)).session
    pods.pod_events[row.container_id or ""] = [EVICTED]  # a same-named pod's, say
    pods.vanish(row.container_id or "")
    assert reconcile(kube) == [row.id]
    assert kube.get(row.id).end_reason == "the session's container vanished"
    assert pods.events_read == []


def test_a_pod_without_events_or_an_unreadable_event_list_keeps_todays_reason(
    kube: SessionService, pods: FakePodRuntime
) -> None:
    quiet = kube.create(SessionRequest(user_id="alice", gpu=MIG)).session
    pods.fail(quiet.container_id or "", "failed", None, None)
    assert reconcile(kube) == [quiet.id]
    assert kube.get(quiet.id).end_reason == ("the session's container is failed (exit code None)")
    loud = kube.create(SessionRequest(user_id="bob", gpu=MIG)).session
    pods.fail(loud.container_id or "", "failed (Evicted)", EVICTED, None)
    pods.events_unreachable = True
    assert reconcile(kube) == [loud.id]  # the session ends all the same
    assert "last event" not in (kube.get(loud.id).end_reason or "")


# --------------------------------------------------------------------- ledger
def test_the_ledger_runs_from_the_admission_commit_to_the_pods_termination(
    kube: SessionService, pods: FakePodRuntime, clock: Clock
) -> None:
    """Admitted at t0, the pod runs from t0+1 min, is evicted at t0+10 min and the
    reconciler notices at t0+30 min: the grant is charged from t0 to t0+10 min."""
    ledger_of(kube, clock)
    t0 = clock.now
    reservation = kube.reserve(SessionRequest(user_id="alice", gpu=MIG))
    clock.advance(minutes=1)  # the pod is scheduled, pulled, started
    row = kube.launch(reservation).session
    assert row.started_at == t0 + timedelta(minutes=1)
    pods.fail(row.container_id or "", "failed (Evicted)", EVICTED, t0 + timedelta(minutes=10))
    clock.advance(minutes=29)
    assert reconcile(kube) == [row.id]
    assert ledger_events(kube, row.id) == {"start": t0, "end": t0 + timedelta(minutes=10)}
    assert kube.get(row.id).ended_at == t0 + timedelta(minutes=30)  # when Sandman ended it


def test_a_deleted_session_is_charged_until_its_pod_is_gone(
    kube: SessionService, clock: Clock
) -> None:
    """``remove`` returns once the pod is gone (the backend waits for it), so the end
    Sandman writes right after is the pod's termination."""
    ledger_of(kube, clock)
    t0 = clock.now
    row = kube.create(SessionRequest(user_id="alice", gpu=MIG)).session
    clock.advance(minutes=45)
    kube.end(row.id, SessionStatus.DELETED, "deleted by its user")
    assert ledger_events(kube, row.id) == {"start": t0, "end": t0 + timedelta(minutes=45)}


def test_a_termination_the_runtime_dates_after_now_is_charged_until_now(
    kube: SessionService, pods: FakePodRuntime, clock: Clock
) -> None:
    ledger_of(kube, clock)
    t0 = clock.now
    row = kube.create(SessionRequest(user_id="alice", gpu=MIG)).session
    clock.advance(minutes=5)
    pods.fail(row.container_id or "", "failed", None, t0 + timedelta(hours=1))  # a skewed clock
    assert reconcile(kube) == [row.id]
    assert ledger_events(kube, row.id)["end"] == t0 + timedelta(minutes=5)


def test_docker_is_charged_until_the_reconciler_ends_a_dead_container(
    service: SessionService, runtime: FakeRuntime, clock: Clock
) -> None:
    ledger_of(service, clock)
    t0 = clock.now
    row = service.create(SessionRequest(user_id="alice", gpu=MIG)).session
    clock.advance(minutes=20)
    runtime.kill(row.container_id or "", exit_code=1)
    assert reconcile(service) == [row.id]
    assert ledger_events(service, row.id) == {"start": t0, "end": t0 + timedelta(minutes=20)}
    assert service.get(row.id).end_reason == (
        "the session's container is exited (exit code 1)"
    )  # no event on Docker


# -------------------------------------------------------------------- metrics
def test_session_info_leaves_the_gpu_labels_empty_where_kubernetes_picked_the_device(
    kube: SessionService, cluster: KubernetesInventory
) -> None:
    row = kube.create(SessionRequest(user_id="alice", gpu=MIG)).session
    rows = [kube.get(row.id)]
    devices = cluster.devices()
    assert row.gpu_uuid and row.gpu_uuid in {i.uuid for d in devices for i in d.instances}
    holders = holders_of(rows, devices, cluster_places=True)
    snapshot = MetricsSnapshot(at=datetime.now(), holders=tuple(holders))
    info = session_families(snapshot)[0]
    [sample] = info.samples
    labels = sample.labels
    assert (labels["UUID"], labels["GPU_I_ID"], labels["GPU_I_PROFILE"]) == ("", "", "1g.5gb")
    # the same rows with the inventory's stand-ins taken as devices would name them
    named = holders_of(rows, devices)[0].devices[0]
    assert named.gpu_uuid and named.gpu_instance_id is not None


# ------------------------------------------------------------------ seed 003
def test_seed_devices_name_the_cluster_node_that_advertises_them(
    kube: SessionService, cluster: KubernetesInventory
) -> None:
    fleet = SeedGpu(cluster, kube, cast(GpuAdmin, None), lambda: None, "sandman-host")
    every = fleet.devices(None)
    assert [d["nodeName"] for d in every] == ["gpu-node-1", "gpu-node-2"]
    assert [d["deviceId"] for d in every] == ["gpu-node-1-GPU-00", "gpu-node-2-GPU-01"]
    assert [d["nodeName"] for d in fleet.devices("gpu-node-2")] == ["gpu-node-2"]
    assert fleet.devices("sandman-host") == []
    assert fleet.device("gpu-node-2-GPU-01").uuid == every[1]["gpuUuid"]


def test_seed_devices_on_docker_are_this_hosts(
    service: SessionService, inventory: GpuInventory
) -> None:
    fleet = SeedGpu(inventory, service, cast(GpuAdmin, None), lambda: None, "sandman-host")
    every = fleet.devices(None)
    assert every and {d["nodeName"] for d in every} == {"sandman-host"}
    assert fleet.devices("other") == []
