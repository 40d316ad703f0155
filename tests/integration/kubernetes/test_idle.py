"""Idle reclaim on the Kubernetes runtime, on the real cluster: Sandman looks inside
session pods through the pods/exec subresource as on Docker, so a silent session is
reclaimed and one computing with nobody connected is kept; one holding a GPU whose
activity no metrics source shows is never reclaimed. Sweeps run by hand every
second, with timeouts of seconds (see tests/integration/api/test_idle_reclaim.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.api.test_idle_reclaim import status, sweep_until
from tests.integration.conftest import Harness
from tests.integration.kubernetes.cluster import LocalCluster
from tests.integration.kubernetes.support import pods, sandman_on, session_namespace
from tests.integration.support import ssh, write_key


@pytest.fixture(scope="module")
def idle(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    root = tmp_path_factory.mktemp("kube-idle")
    with (
        session_namespace(cluster, root, 4) as place,
        sandman_on(
            cluster, place, root / "data",
            idle_timeout="6s", idle_warnings="none", idle_check_interval="1s",
        ) as harness,
    ):  # fmt: skip
        yield harness


def started(harness: Harness, user: str, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    created = harness.create(user, gpu_count=0)
    assert created.status_code == 201, created.text
    session = created.json()
    return session, write_key(tmp_path, session["ssh_private_key"], name=user)


def test_a_silent_pod_is_reclaimed_and_a_computing_one_kept(
    idle: Harness, cluster: LocalCluster, tmp_path: Path
) -> None:
    namespace = idle.core.settings.kube_namespace
    busy, busy_key = started(idle, "jon", tmp_path)
    silent, _ = started(idle, "kim", tmp_path)
    # Silent too, but holding a GPU whose activity no metrics source shows: kept.
    gpu = idle.create("gus", mig_profile="1g.5gb")
    assert gpu.status_code == 201, gpu.text
    unseen = gpu.json()
    # A job left running with nobody connected (as in a detached tmux).
    job = ssh(busy, busy_key, "nohup sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 &")
    assert job.returncode == 0, job.stderr
    began = time.monotonic()
    sweep_until(idle, lambda: status(idle, silent["session_id"])["status"] == "idle", 60)
    assert time.monotonic() - began >= 4
    ended = status(idle, silent["session_id"])
    assert "idle for" in ended["end_reason"], ended
    sweep_until(idle, lambda: time.monotonic() - began > 14, 30)  # two timeouts more
    kept = status(idle, busy["session_id"])
    assert kept["status"] == "running", kept
    assert status(idle, unseen["session_id"])["status"] == "running"
    # the reclaimed session's pod is gone; the computing one's and the GPU one's run
    names = {p["metadata"]["labels"]["sandman.session_id"] for p in pods(cluster, namespace)}
    assert names == {busy["session_id"], unseen["session_id"]}
