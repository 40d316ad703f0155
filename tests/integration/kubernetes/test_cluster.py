"""The cluster itself: a pod of the workspace image is scheduled on the node with
a simulated MIG resource and runs; a request beyond what the node advertises stays
Pending with the scheduler's reason."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from tests.integration.kubernetes.cluster import LocalCluster

from sandman.image.build import WORKSPACE_IMAGE


def pod_manifest(name: str, mig: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"sandman.test": "true"}},
        "spec": {
            "automountServiceAccountToken": False,
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": WORKSPACE_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "300"],
                    "resources": {"limits": {"nvidia.com/mig-1g.5gb": str(mig)}},
                    "securityContext": {
                        "runAsUser": 1000,
                        "runAsNonRoot": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def wait_for(cluster: LocalCluster, name: str, check: Any, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    pod: dict[str, Any] = {}
    while time.monotonic() < deadline:
        proc = cluster.kubectl("get", "pod", name, "-o", "json", check=False)
        if proc.returncode == 0:
            pod = json.loads(proc.stdout)
            if check(pod):
                return pod
        time.sleep(0.5)
    raise AssertionError(f"pod {name} never got there: {json.dumps(pod.get('status'))[:2000]}")


def test_the_node_advertises_simulated_mig_devices(cluster: LocalCluster) -> None:
    node = json.loads(cluster.kubectl("get", "node", cluster.node_name, "-o", "json").stdout)
    assert node["status"]["allocatable"]["nvidia.com/mig-1g.5gb"] == "7"
    assert node["status"]["nodeInfo"]["kubeletVersion"].startswith("v1.20")


def test_a_pod_with_a_mig_resource_runs_and_one_beyond_the_node_waits(
    cluster: LocalCluster,
) -> None:
    fits, too_big = f"fits-{uuid.uuid4().hex[:6]}", f"big-{uuid.uuid4().hex[:6]}"
    try:
        cluster.kubectl("apply", "-f", "-", input=json.dumps(pod_manifest(fits, 1)))
        cluster.kubectl("apply", "-f", "-", input=json.dumps(pod_manifest(too_big, 8)))
        running = wait_for(cluster, fits, lambda p: p["status"].get("phase") == "Running")
        assert running["spec"]["nodeName"] == cluster.node_name
        assert running["status"]["podIP"]
        out = cluster.kubectl("exec", fits, "--", "id", "-u").stdout.strip()
        assert out == "1000"

        def unschedulable(pod: dict[str, Any]) -> bool:
            return any(
                c.get("reason") == "Unschedulable" for c in pod["status"].get("conditions", [])
            )

        waiting = wait_for(cluster, too_big, unschedulable)
        message = next(c["message"] for c in waiting["status"]["conditions"])
        assert "Insufficient nvidia.com/mig-1g.5gb" in message
    finally:
        cluster.kubectl("delete", "pod", fits, too_big, "--grace-period=0", "--force", check=False)
