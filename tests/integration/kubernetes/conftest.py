"""One real Kubernetes control plane and node for the module's tests (see
``cluster.py``); it is torn down, with everything it ran, after them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.kubernetes.cluster import LocalCluster, running_cluster

from sandman.image.build import WORKSPACE_IMAGE

MIG = {"nvidia.com/mig-1g.5gb": 7}
LABELS = {
    "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB",
    "nvidia.com/mig.strategy": "mixed",
    "sandman.test/pool": "a100",
}


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    directory: Path = tmp_path_factory.mktemp("kube", numbered=True)
    with running_cluster(directory, MIG, images=(WORKSPACE_IMAGE,)) as found:
        # What NVIDIA's GPU feature discovery labels a node with, and a pool of our own.
        found.kubectl("label", "node", found.node_name, *(f"{k}={v}" for k, v in LABELS.items()))
        yield found
