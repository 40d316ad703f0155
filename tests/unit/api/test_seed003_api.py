"""Seed 003's GPU fleet API over the fake runtime: field names, allocations as
sessions, MIG creation by seed names, who may call what, and the /k8s-monitor alias."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import HEADERS, fake_core

from sandman.api.app import create_app
from sandman.core import Sandman
from sandman.services.seed_gpu import node_name

TOPOLOGY = """
gpus:
  - {model: H100-SXM5-80GB, mig: static}
  - {model: A100-SXM4-80GB, mig: dynamic}
  - {model: RTX-4090}
"""
OVERVIEW = {
    "totalGpuDevices",
    "activeAllocations",
    "totalMigInstances",
    "overallGpuUtilization",
    "devicesByModel",
}


@pytest.fixture
def core(tmp_path: Path) -> Iterator[Sandman]:
    topology = tmp_path / "fleet.yaml"
    topology.write_text(TOPOLOGY)
    made = fake_core(tmp_path, FakeRuntime(), gpu_topology=str(topology))
    yield made
    made.stop()


@pytest.fixture
def api(core: Sandman) -> Iterator[TestClient]:
    with TestClient(create_app(core, run_background=False)) as client:
        client.post("/api/v1/teams", json={"name": "serving"}, headers=HEADERS)
        made = client.post(
            "/api/v1/projects", json={"name": "model-serving", "team": "serving"}, headers=HEADERS
        )
        assert made.status_code == 201, made.text
        yield client


def user_token(api: TestClient, user_id: str, team: str | None = None) -> dict[str, str]:
    body: dict[str, Any] = {"user_id": user_id}
    if team is not None:
        body["default_team"] = team
    assert api.post("/api/v1/users", json=body, headers=HEADERS).status_code == 201
    if team is not None:
        api.put(f"/api/v1/teams/{team}/members/{user_id}", json={"role": "member"}, headers=HEADERS)
    token = api.post("/api/v1/tokens", json={"name": "t", "user_id": user_id}, headers=HEADERS)
    return {"Authorization": f"Bearer {token.json()['token']}"}


def allocate(api: TestClient, headers: dict[str, str], **body: Any) -> Any:
    asked = {"namespace": "model-serving", "podName": "vllm-llama2-7b", **body}
    return api.post("/api/v1/gpu/allocations", json=asked, headers=headers)


def test_the_overview_has_the_seeds_fields_and_model_keys(api: TestClient, core: Sandman) -> None:
    body = api.get("/api/v1/gpu/overview", headers=HEADERS).json()
    assert set(body) == OVERVIEW
    assert body["devicesByModel"] == {"A100_80GB": 1, "H100_80GB": 1, "RTX4090": 1}
    assert body["totalGpuDevices"] == 3 and body["activeAllocations"] == 0
    assert body["overallGpuUtilization"] is None  # no measurement yet
    core.collector.collect()
    measured = api.get("/k8s-monitor/api/v1/gpu/overview", headers=HEADERS).json()
    assert isinstance(measured["overallGpuUtilization"], float)


def test_devices_are_listed_by_node(api: TestClient) -> None:
    devices = api.get(f"/api/v1/gpu/devices?nodeName={node_name()}", headers=HEADERS).json()
    assert [d["deviceId"] for d in devices] == [f"{node_name()}-GPU-0{i}" for i in range(3)]
    assert devices[0]["modelName"] == "H100_80GB" and devices[0]["migMode"] == "static"
    assert api.get("/api/v1/gpu/devices?nodeName=worker-99", headers=HEADERS).json() == []
    assert len(api.get("/api/v1/gpu/devices", headers=HEADERS).json()) == 3


def test_an_allocation_starts_a_session_with_the_workloads_share(api: TestClient) -> None:
    ann = user_token(api, "ann", team="serving")
    made = allocate(api, ann, workloadType="Inference", useMig=True, requiredMemoryGb=20)
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["workloadType"] == "inference" and body["useMig"] is True
    assert body["migProfile"] == "A100_1G20GB" and body["deviceId"].endswith("-GPU-01")
    session = body["session"]
    assert session["user_id"] == "ann" and session["project"] == "model-serving"
    assert session["labels"] == {"pod_name": "vllm-llama2-7b", "workload_type": "inference"}
    assert session["status"] == "running" and session["mig_profile"] == "1g.20gb"
    overview = api.get("/api/v1/gpu/overview", headers=ann).json()
    assert overview["activeAllocations"] == 1
    # Training goes to the whole RTX 4090; it is bob's session (named by the admin).
    trained = allocate(api, HEADERS, workloadType="training", requiredMemoryGb=16, userId="bob")
    assert trained.status_code == 201, trained.text
    assert trained.json()["useMig"] is False and trained.json()["deviceId"].endswith("-GPU-02")


def test_an_unknown_namespace_is_404_naming_it(api: TestClient) -> None:
    refused = allocate(api, HEADERS, namespace="nowhere", userId="ann")
    assert refused.status_code == 404
    assert "namespace 'nowhere' names no project" in refused.json()["error"]


def test_a_namespace_of_another_team_is_forbidden_to_a_user(api: TestClient) -> None:
    eve = user_token(api, "eve")
    assert allocate(api, eve, requiredMemoryGb=10).status_code == 403


def test_workload_type_on_sessions_is_chosen_and_recorded(api: TestClient) -> None:
    made = api.post(
        "/api/v1/sessions",
        json={"user_id": "cy", "workload_type": "DEVELOPMENT", "gpu_memory_gb": 30},
        headers=HEADERS,
    )
    assert made.status_code == 201, made.text
    assert made.json()["mig_profile"] == "3g.40gb"
    assert made.json()["labels"] == {"workload_type": "development"}
    bad = api.post(
        "/api/v1/sessions", json={"user_id": "dee", "workload_type": "batch"}, headers=HEADERS
    )
    assert bad.status_code == 400 and "valid: training, inference" in bad.json()["error"]


def test_mig_instances_are_made_from_seed_names(api: TestClient) -> None:
    device = f"{node_name()}-GPU-00"
    made = api.post(
        f"/api/v1/gpu/devices/{device}/mig", json=["H100_2G20GB", "H100_3G40GB"], headers=HEADERS
    )
    assert made.status_code == 201, made.text
    created = made.json()["created"]
    assert [c["migProfile"] for c in created] == ["H100_2G20GB", "H100_3G40GB"]
    assert [c["profile"] for c in created] == ["2g.20gb", "3g.40gb"]
    listed = api.get("/api/v1/gpu/devices", headers=HEADERS).json()[0]["migInstances"]
    assert {i["migProfile"] for i in listed} == {"H100_2G20GB", "H100_3G40GB"}
    unknown = api.post(f"/api/v1/gpu/devices/{device}/mig", json=["A100_1G5GB"], headers=HEADERS)
    assert unknown.status_code == 400
    assert "valid: H100_1G10GB" in unknown.json()["error"]
    assert "H100_7G80GB" in unknown.json()["error"]
    dynamic = f"{node_name()}-GPU-01"
    refused = api.post(f"/api/v1/gpu/devices/{dynamic}/mig", json=["A100_1G10GB"], headers=HEADERS)
    assert refused.status_code == 409  # the dynamic strategy manages its own
    missing = api.post("/api/v1/gpu/devices/GPU-nope/mig", json=["H100_2G20GB"], headers=HEADERS)
    assert missing.status_code == 404


def test_users_read_but_only_operators_make_mig_instances(api: TestClient) -> None:
    ann = user_token(api, "ann", team="serving")
    assert api.get("/api/v1/gpu/overview", headers=ann).status_code == 200
    assert api.get("/api/v1/gpu/devices", headers=ann).status_code == 200
    device = f"{node_name()}-GPU-00"
    denied = api.post(f"/api/v1/gpu/devices/{device}/mig", json=["H100_2G20GB"], headers=ann)
    assert denied.status_code == 403
    assert api.get("/api/v1/gpu/overview").status_code == 401


def test_the_k8s_monitor_paths_are_aliases_outside_the_schema(api: TestClient) -> None:
    for path in ("/k8s-monitor/api/v1/gpu/devices", "/k8s-monitor/api/v1/sessions"):
        assert api.get(path, headers=HEADERS).status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert "/api/v1/gpu/allocations" in paths
    assert not any(p.startswith("/k8s-monitor") for p in paths)
