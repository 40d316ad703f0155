"""``sandman serve`` processes on the Kubernetes runtime: a ``kill -9`` in the middle
of a burst leaves no pod without a session once Sandman is back, and two replicas on
one PostgreSQL never hand one MIG slice to two pods."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.kubernetes.cluster import LocalCluster
from tests.integration.kubernetes.support import Place, pods, session_namespace, wait_for_no_pods
from tests.integration.postgres import running_postgres
from tests.integration.support import HEADERS, Server

PROFILE = "1g.5gb"


@pytest.fixture(scope="module")
def place(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Place]:
    with session_namespace(cluster, tmp_path_factory.mktemp("kube-crash"), 24) as found:
        yield found


@pytest.fixture
def servers(cluster: LocalCluster, place: Place, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``sandman serve`` on the cluster; all share ``tmp_path/data`` and whatever
    database they are given, and every pod they made is gone afterwards."""
    made: list[Server] = []

    def make(**settings: str) -> Server:
        found = place.server(cluster, tmp_path / "data", **settings)
        made.append(found)
        return found

    yield make
    try:
        for found in made:
            if found.process and found.process.poll() is None:
                with contextlib.suppress(httpx.HTTPError):
                    httpx.delete(f"{found.url}/api/v1/sessions", headers=HEADERS, timeout=300)
                break
    finally:
        for found in made:
            found.stop()
        left = pods(cluster, place.namespace)
        if left:  # the test has failed already; leave the next one a clean namespace
            cluster.kubectl("delete", "pods", "-n", place.namespace, "--all", "--grace-period=0",
                            "--force", check=False, timeout=120)  # fmt: skip
        wait_for_no_pods(cluster, place.namespace)


def sessions_pods(cluster: LocalCluster, namespace: str) -> dict[str, dict[str, Any]]:
    """The namespace's live pods by their session's id."""
    return {p["metadata"]["labels"]["sandman.session_id"]: p for p in pods(cluster, namespace)}


def settled(server: Server, timeout: float) -> list[dict[str, Any]]:
    """All sessions once none is starting or stopping any more."""
    deadline = time.monotonic() + timeout
    while True:
        sessions: list[dict[str, Any]] = server.get("/sessions?status=all")
        busy = [s for s in sessions if s["status"] in ("starting", "stopping")]
        if not busy or time.monotonic() > deadline:
            assert not busy, busy
            return sessions
        time.sleep(1)


def claimed_slices(server: Server) -> dict[str, str]:
    """The MIG slices the inventory shows as held, with their sessions."""
    held = {}
    for gpu in server.get("/gpus")["gpus"]:
        for instance in gpu["mig_instances"]:
            if instance["allocated"]:
                held[instance["uuid"]] = instance["session_id"]
    return held


def test_kill_9_during_a_burst_leaves_no_orphaned_pod(
    servers: Callable[..., Server], cluster: LocalCluster, place: Place
) -> None:
    sandman = servers(reconcile_interval="2s", reconcile_grace="5s")
    sandman.start()
    pool = ThreadPoolExecutor(max_workers=10)
    futures = [pool.submit(sandman.create, f"crash{i}", mig_profile=PROFILE) for i in range(10)]
    # Pods are being created and scheduled, none has been running long.
    deadline = time.monotonic() + 60
    while not pods(cluster, place.namespace) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    made_before = {p["metadata"]["name"] for p in pods(cluster, place.namespace)}
    assert made_before, "no pod was created before the kill"
    sandman.kill()
    for future in futures:
        with contextlib.suppress(httpx.HTTPError):
            future.result(timeout=60)
    pool.shutdown()

    sandman.start()
    sessions = settled(sandman, 240)
    assert all(s["status"] in ("running", "failed") for s in sessions), sessions
    active = {s["session_id"] for s in sessions if s["status"] == "running"}
    # Every running session has its running pod, and no pod lacks a running session.
    deadline = time.monotonic() + 120
    while set(sessions_pods(cluster, place.namespace)) != active and time.monotonic() < deadline:
        time.sleep(1)
    found = sessions_pods(cluster, place.namespace)
    assert set(found) == active, (sorted(found), sorted(active))
    assert all(p["status"]["phase"] == "Running" for p in found.values())
    # The slices held are exactly the running sessions'.
    assert set(claimed_slices(sandman).values()) == active
    # A session that was cut off is failed with a reason, and its pod is gone.
    for failed in (s for s in sessions if s["status"] == "failed"):
        assert failed["session_id"] not in found
    # Capacity is whole again: the 7 slices less those running sessions hold.
    free = sandman.get("/gpus/available")
    assert free["count"] == 7 - len(active), free


def test_two_replicas_on_one_postgresql_never_share_a_slice(
    servers: Callable[..., Server], cluster: LocalCluster, place: Place
) -> None:
    with running_postgres() as url:
        replicas = [servers(database_url=url, reconcile_interval="5s") for _ in range(2)]
        for replica in replicas:
            replica.start()
        users = [f"replica{i:02d}" for i in range(30)]
        with ThreadPoolExecutor(max_workers=30) as pool:
            answers = list(
                pool.map(lambda i: replicas[i % 2].create(users[i], mig_profile=PROFILE), range(30))
            )
        created = [a.json() for a in answers if a.status_code == 201]
        refused = [a for a in answers if a.status_code != 201]
        assert len(created) == 7, [a.text for a in refused][:3]
        assert {a.status_code for a in refused} == {503}, [a.text for a in refused][:3]
        # Both replicas started some: the burst really was shared.
        by_replica = {i % 2 for i, a in enumerate(answers) if a.status_code == 201}
        assert by_replica == {0, 1}, by_replica
        found = sessions_pods(cluster, place.namespace)
        assert set(found) == {s["session_id"] for s in created}
        assert all(p["status"]["phase"] == "Running" for p in found.values())
        for pod in found.values():
            limits = pod["spec"]["containers"][0]["resources"]["limits"]
            assert limits[f"nvidia.com/mig-{PROFILE}"] == "1"
        # Each replica sees the same seven slices held, one per session.
        for replica in replicas:
            held = claimed_slices(replica)
            assert len(held) == 7 and set(held.values()) == set(found), held
        # Ending them through one replica frees them for both.
        ended = httpx.delete(f"{replicas[1].url}/api/v1/sessions", headers=HEADERS, timeout=300)
        assert len(ended.json()["ended"]) == 7, ended.text
        assert wait_for_no_pods(cluster, place.namespace)
        for replica in replicas:
            assert replica.get("/gpus/available")["count"] == 7
            replica.stop()


def test_a_pod_pending_past_the_timeout_fails_its_session_with_the_schedulers_reason(
    servers: Callable[..., Server], cluster: LocalCluster, place: Place
) -> None:
    # a node pool no node belongs to: the scheduler can place the pod nowhere
    sandman = servers(kube_pending_timeout="5s", kube_node_selectors='{"*": {"pool": "none"}}')
    sandman.start()
    refused = sandman.create("toobig", mig_profile=PROFILE)
    assert refused.status_code == 500, refused.text
    error = refused.json()["error"]
    assert "FailedScheduling" in error and "node affinity" in error, error
    assert "after 5 s" in error, error
    (session,) = sandman.get("/sessions?status=all")
    assert session["status"] == "failed"
    assert "node affinity" in session["end_reason"], session
    assert pods(cluster, place.namespace) == []
    secrets = cluster.kubectl(
        "get", "secrets", "-n", place.namespace, "-l",
        f"sandman.session_id={session['session_id']}", "-o", "name",
    ).stdout  # fmt: skip
    assert secrets.strip() == ""
    assert claimed_slices(sandman) == {}
