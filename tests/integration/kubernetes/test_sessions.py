"""Sandman on the Kubernetes runtime, against the real cluster: sessions are pods with
their MIG resource, workspaces are claims that outlive them, the gateway lands in the
pod, and capacity is the nodes' advertised resources."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.integration.conftest import Harness
from tests.integration.kubernetes.cluster import LocalCluster
from tests.integration.kubernetes.support import pod_of, pods, sandman_on, session_namespace
from tests.integration.support import ssh, write_key

VOLUMES = 12


@pytest.fixture(scope="module")
def kube(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """One Sandman on the cluster, with its own namespace and local volumes."""
    root = tmp_path_factory.mktemp("kube-sandman")
    with (
        session_namespace(cluster, root, VOLUMES) as place,
        sandman_on(
            cluster,
            place,
            root / "data",
            kube_node_selectors={"A100-40GB": {"sandman.test/pool": "a100"}},
        ) as harness,
    ):
        yield harness


def gone(cluster: LocalCluster, kind: str, name: str, namespace: str) -> bool:
    proc = cluster.kubectl("get", kind, name, "-n", namespace, check=False)
    return proc.returncode != 0 and "NotFound" in proc.stderr


def test_a_session_is_a_pod_and_its_workspace_outlives_it(
    kube: Harness, cluster: LocalCluster, tmp_path: Path
) -> None:
    namespace = kube.core.settings.kube_namespace
    created = kube.create("kim", mig_profile="1g.5gb")
    assert created.status_code == 201, created.text
    session = created.json()
    pod = pod_of(cluster, namespace, session["session_id"])
    assert pod["spec"]["nodeName"] == cluster.node_name
    # the node pool of its GPU model (SANDMAN_KUBE_NODE_SELECTORS) is required
    assert pod["spec"]["nodeSelector"] == {"sandman.test/pool": "a100"}
    (gpu,) = kube.client.get("/api/v1/gpus", headers=kube.headers).json()["gpus"]
    assert cluster.node_name in gpu["name"] and "A100" in gpu["name"], gpu["name"]
    shown = kube.client.get(f"/api/v1/sessions/{session['session_id']}", headers=kube.headers)
    assert shown.json()["placement_reason"] == f"placed by Kubernetes on node {cluster.node_name}"
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/mig-1g.5gb"] == "1"
    claim = json.loads(
        cluster.kubectl(
            "get", "pvc", "-n", namespace, "-l", "sandman.user_id=kim", "-o", "json"
        ).stdout
    )["items"]
    assert [c["status"]["phase"] for c in claim] == ["Bound"]
    assert shown.json()["metadata"]["workspace"] == (
        f"persistentvolumeclaim/{namespace}/{claim[0]['metadata']['name']}"
    )

    key = write_key(tmp_path, session["ssh_private_key"])
    who = ssh(session, key, "id -u; hostname; echo kept > /workspace/note")
    assert who.returncode == 0, who.stderr
    uid = who.stdout.split()[0]
    with kube.core.db.read() as db:
        from sandman.store.models import User

        assert uid == str(db.get_one(User, "kim").uid)

    deleted = kube.client.delete(f"/api/v1/sessions/{session['session_id']}", headers=kube.headers)
    assert deleted.status_code in (200, 204), deleted.text
    assert gone(cluster, "pod", pod["metadata"]["name"], namespace)
    secrets = json.loads(
        cluster.kubectl(
            "get",
            "secrets",
            "-n",
            namespace,
            "-l",
            f"sandman.session_id={session['session_id']}",
            "-o",
            "json",
        ).stdout
    )["items"]
    assert secrets == []
    kept = json.loads(
        cluster.kubectl(
            "get", "pvc", "-n", namespace, "-l", "sandman.user_id=kim", "-o", "json"
        ).stdout
    )["items"]
    assert [c["metadata"]["name"] for c in kept] == [c["metadata"]["name"] for c in claim]

    again = kube.create("kim", mig_profile="1g.5gb")
    assert again.status_code == 201, again.text
    second = again.json()
    key2 = write_key(tmp_path, second["ssh_private_key"], "id2")
    read = ssh(second, key2, "cat /workspace/note")
    assert read.returncode == 0 and read.stdout.strip() == "kept", read.stderr
    kube.client.delete(f"/api/v1/sessions/{second['session_id']}", headers=kube.headers)


def test_a_profile_no_node_advertises_is_refused_as_on_docker(kube: Harness) -> None:
    refused = kube.create("lee", mig_profile="3g.20gb")
    assert refused.status_code == 400, refused.text
    assert "3g.20gb" in refused.json()["error"]


def test_thirty_concurrent_creates_against_seven_slices_start_exactly_seven_pods(
    kube: Harness, cluster: LocalCluster
) -> None:
    namespace = kube.core.settings.kube_namespace
    users = [f"burst{i:02d}" for i in range(30)]
    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(lambda u: kube.create(u, mig_profile="1g.5gb"), users))
    codes = Counter(a.status_code for a in answers)
    try:
        assert codes[201] == 7, codes
        assert codes[503] == 23, {a.status_code: a.text for a in answers if a.status_code != 201}
        running = [p for p in pods(cluster, namespace) if p["status"].get("phase") == "Running"]
        assert len(running) == 7
        assert all(
            "capacity" in a.json()["error"] or "1g.5gb" in a.json()["error"]
            for a in answers
            if a.status_code == 503
        )
    finally:
        kube.core.sessions.end_all("test")
    deadline = time.monotonic() + 120
    while pods(cluster, namespace) and time.monotonic() < deadline:
        time.sleep(1)
    assert pods(cluster, namespace) == []


def test_the_reconciler_ends_a_session_whose_pod_failed_and_deletes_a_stray_pod(
    kube: Harness, cluster: LocalCluster
) -> None:
    namespace = kube.core.settings.kube_namespace
    created = kube.create("ria", mig_profile="1g.5gb")
    assert created.status_code == 201, created.text
    session = created.json()
    pod = pod_of(cluster, namespace, session["session_id"])
    name = pod["metadata"]["name"]
    # A pod of this deployment whose session does not exist (left by a crash).
    labels = {**pod["metadata"]["labels"], "sandman.session_id": "no-such-session"}
    stray = f"{name}-stray"
    cluster.kubectl(
        "run", stray, "-n", namespace, "--image=sandman-workspace:latest", "--restart=Never",
        "--image-pull-policy=Never", "--labels=" + ",".join(f"{k}={v}" for k, v in labels.items()),
        "--overrides=" + json.dumps({"spec": {"securityContext": {"runAsUser": 20999}}}),
        "--", "sleep", "300",
    )  # fmt: skip
    # The session's sshd ends: its pod (restartPolicy Never) fails and stays down.
    # The signal goes through the node's engine: an exec inside the container can
    # hang when the container it runs in dies under it.
    container = cluster.docker(
        "ps", "-q", f"--filter=label=io.kubernetes.pod.name={name}",
        f"--filter=label=io.kubernetes.pod.namespace={namespace}",
        "--filter=label=io.kubernetes.container.name=session",
    ).stdout.decode().split()  # fmt: skip
    assert len(container) == 1, container
    cluster.docker("kill", "--signal=TERM", container[0])
    deadline = time.monotonic() + 120
    phase = ""
    while time.monotonic() < deadline:
        current = json.loads(
            cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout
        )
        phase = current["status"].get("phase", "")
        if phase in ("Failed", "Succeeded"):
            break
        time.sleep(0.5)
    assert phase in ("Failed", "Succeeded"), phase

    report = kube.core.reconciler.run_once()
    assert session["session_id"] in report.ended_sessions, report
    assert stray in report.removed_containers, report
    ended = kube.client.get(f"/api/v1/sessions/{session['session_id']}", headers=kube.headers)
    body = ended.json()
    assert body["status"] == "lost", body
    assert phase.lower() in body["end_reason"] and "last event:" in body["end_reason"], body
    deadline = time.monotonic() + 120
    while pods(cluster, namespace) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = [(p["metadata"]["name"], p["status"].get("phase")) for p in pods(cluster, namespace)]
    assert left == []
