"""Seed 003's GPU fleet API on a real server: its field names, an allocation that
starts a real session container, MIG instances made on a static GPU from seed
names, and the same routes under seed 003's ``/k8s-monitor/api/v1``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import httpx
from tests.integration.support import HEADERS, Server

TOPOLOGY = """
gpus:
  - {model: H100-SXM5-80GB, mig: static}
  - {model: A100-SXM4-80GB, mig: dynamic}
  - {model: RTX-4090}
"""


def _call(sandman: Server, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(method, f"{sandman.url}{path}", json=body, headers=HEADERS, timeout=180)


def test_seed_003_endpoints_answer_with_their_field_names(
    server: Callable[..., Server], tmp_path: Path
) -> None:
    topology = tmp_path / "fleet.yaml"
    topology.write_text(TOPOLOGY)
    sandman = server(gpu_topology=str(topology))
    sandman.start()

    overview = _call(sandman, "GET", "/api/v1/gpu/overview").json()
    assert set(overview) == {
        "totalGpuDevices",
        "activeAllocations",
        "totalMigInstances",
        "overallGpuUtilization",
        "devicesByModel",
    }
    assert overview["devicesByModel"] == {"A100_80GB": 1, "H100_80GB": 1, "RTX4090": 1}
    alias = _call(sandman, "GET", "/k8s-monitor/api/v1/gpu/overview")
    assert alias.status_code == 200 and alias.json()["totalGpuDevices"] == 3

    devices = _call(sandman, "GET", "/api/v1/gpu/devices").json()
    node = devices[0]["nodeName"]
    by_node = _call(sandman, "GET", f"/k8s-monitor/api/v1/gpu/devices?nodeName={node}").json()
    assert [d["deviceId"] for d in by_node] == [f"{node}-GPU-0{i}" for i in range(3)]
    assert {"modelName", "migEnabled", "migInstances", "gpuUuid"} <= set(by_node[0])

    # An allocation: a session for the named user, charged to the namespace's project.
    assert _call(sandman, "POST", "/api/v1/teams", {"name": "serving"}).status_code == 201
    project = {"name": "model-serving", "team": "serving"}
    assert _call(sandman, "POST", "/api/v1/projects", project).status_code == 201
    asked = {
        "namespace": "model-serving",
        "podName": "vllm-llama2-7b",
        "workloadType": "Inference",
        "useMig": True,
        "requiredMemoryGb": 20,
        "userId": "seedy",
    }
    made = _call(sandman, "POST", "/k8s-monitor/api/v1/gpu/allocations", asked)
    assert made.status_code == 201, made.text
    allocation = made.json()
    assert allocation["migProfile"] == "A100_1G20GB"
    assert allocation["deviceId"] == f"{node}-GPU-01"
    session = allocation["session"]
    assert session["status"] == "running" and session["project"] == "model-serving"
    assert session["labels"]["pod_name"] == "vllm-llama2-7b"
    container = docker.from_env(version="auto").containers.get(session["container_id"])
    assert container.status == "running"
    assert container.labels["sandman.session_id"] == allocation["allocationId"]
    assert _call(sandman, "GET", "/api/v1/gpu/overview").json()["activeAllocations"] == 1
    unknown = dict(asked, namespace="nowhere", userId="other")
    refused = _call(sandman, "POST", "/api/v1/gpu/allocations", unknown)
    assert refused.status_code == 404 and "nowhere" in refused.json()["error"]

    # MIG instances on the static H100, by the seed's names.
    h100 = f"/api/v1/gpu/devices/{node}-GPU-00/mig"
    created = _call(sandman, "POST", h100, ["H100_2G20GB", "H100_3G40GB"])
    assert created.status_code == 201, created.text
    assert [c["profile"] for c in created.json()["created"]] == ["2g.20gb", "3g.40gb"]
    listed = _call(sandman, "GET", "/api/v1/gpu/devices").json()[0]["migInstances"]
    assert sorted(i["migProfile"] for i in listed) == ["H100_2G20GB", "H100_3G40GB"]
    wrong = _call(sandman, "POST", f"/k8s-monitor{h100}", ["A100_1G5GB"])
    assert wrong.status_code == 400 and "H100_1G10GB" in wrong.json()["error"]
    assert _call(sandman, "GET", "/api/v1/gpu/overview").json()["totalMigInstances"] == 3

    ended = _call(sandman, "DELETE", f"/api/v1/sessions/{allocation['allocationId']}")
    assert ended.status_code == 200, ended.text
