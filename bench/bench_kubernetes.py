"""Session creation on Kubernetes: ``POST /sessions`` until sshd answers, against a
bare ``kubectl run`` of the same image and pod (the manifest Sandman's own builder
makes, its Secret created beforehand, an ``emptyDir`` for ``/workspace``) until its
sshd answers on the pod's address, interleaved in the same run.

Run: ``.venv/bin/python bench/bench_kubernetes.py [--rounds 10] [--concurrent 7]``.
It starts the tests' local cluster (``tests/integration/kubernetes/cluster.py``: a
private engine on its own bridge, the cached Kubernetes 1.20 build, 7 simulated
``mig-1g.5gb``) and a ``sandman serve`` on it, both on this machine, and stops
everything it started. Sandman's rounds reuse one user, whose claim is bound after
the first round (a returning user); the first session of a new user is reported
apart. A burst of concurrent creates (returning users) is timed against as many
bare pods. The bare pods' addresses are read through the API, as Sandman reads them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import kubernetes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.kubernetes.cluster import LocalCluster, running_cluster  # noqa: E402
from tests.integration.kubernetes.support import Place, session_namespace  # noqa: E402
from tests.integration.support import TOKEN, Server  # noqa: E402

from sandman.image.build import WORKSPACE_IMAGE  # noqa: E402
from sandman.runtime.kubernetes.manifests import BuildOptions, make_pod, make_secret  # noqa: E402
from sandman.services.container_spec import SessionContainer, session_launch  # noqa: E402
from sandman.services.keys import generate_key_pair  # noqa: E402
from sandman.services.readiness import wait_for_sshd  # noqa: E402

PROFILE = "1g.5gb"
MIG = {f"nvidia.com/mig-{PROFILE}": 7}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(name: str, values: list[float]) -> str:
    return (
        f"{name:<30} median {statistics.median(values) * 1000:7.0f} ms   "
        f"p95 {percentile(values, 0.95) * 1000:7.0f} ms"
    )


class BarePods:
    """The baseline: ``kubectl run`` of the pod Sandman's builder makes, with the
    workspace an ``emptyDir`` (no claim) and the Secret made once, untimed."""

    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        host = generate_key_pair("bare-host")
        user = generate_key_pair("bare-user")
        launch = session_launch(
            SessionContainer(
                session_id=str(uuid.uuid4()), user_id="bare", uid=30999, gid=30999,
                image=WORKSPACE_IMAGE, name="bare", deployment_id="bench", host_port=None,
                cpus=0.1, memory="256m", pids_limit=1024, shm_size="64m",
                gpu_uuids=("MIG-bench",), mig_profile=PROFILE, real_gpus=False,
                authorized_keys=(user.public_openssh,),
                host_key=(host.private_openssh, host.public_openssh),
            )
        )  # fmt: skip
        options = BuildOptions(storage_class="unused")
        secret = make_secret(launch, namespace, options)
        cluster.kubectl("apply", "-f", "-", input=json.dumps(secret))
        self.pod = make_pod(launch, namespace, options)
        for volume in self.pod["spec"]["volumes"]:
            if "persistentVolumeClaim" in volume:
                del volume["persistentVolumeClaim"]
                volume["emptyDir"] = {}
        self.pod["metadata"]["labels"] = {"sandman.bench": "bare"}
        client = kubernetes.config.new_client_from_config(str(cluster.kubeconfig_path))
        self.api = kubernetes.client.CoreV1Api(client)

    def start(self) -> tuple[float, str]:
        name = f"bare-{uuid.uuid4().hex[:8]}"
        overrides = {"apiVersion": "v1", "spec": self.pod["spec"]}
        began = time.perf_counter()
        self.cluster.kubectl(
            "run", name, "-n", self.namespace, f"--image={WORKSPACE_IMAGE}",
            "--restart=Never", "--image-pull-policy=Never", "--labels=sandman.bench=bare",
            f"--overrides={json.dumps(overrides)}",
        )  # fmt: skip
        address = None
        while address is None:  # through the API, not a kubectl process per look
            address = self.api.read_namespaced_pod(name, self.namespace).status.pod_ip
            if address is None:
                time.sleep(0.05)
        wait_for_sshd(address, 2222, 120)
        return time.perf_counter() - began, name

    def remove(self, name: str) -> None:
        self.cluster.kubectl("delete", "pod", name, "-n", self.namespace, "--grace-period=0",
                             "--force", "--wait=true", check=False, timeout=120)  # fmt: skip


def sandman_server(cluster: LocalCluster, place: Place, root: Path) -> Server:
    server = place.server(cluster, root / "sandman", stop_grace_period="0")
    server.start()
    return server


def create(http: httpx.Client, user: str) -> tuple[float, str]:
    began = time.perf_counter()
    response = http.post("/sessions", json={"user_id": user, "mig_profile": PROFILE})
    elapsed = time.perf_counter() - began
    response.raise_for_status()  # POST answers once sshd in the pod answers
    return elapsed, str(response.json()["session_id"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--concurrent", type=int, default=7)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sandman-bench-kube-"))
    bare_times: list[float] = []
    sandman_times: list[float] = []
    with (
        running_cluster(root / "cluster", MIG, images=(WORKSPACE_IMAGE,)) as cluster,
        session_namespace(cluster, root, args.concurrent + 2) as place,
    ):
        bare = BarePods(cluster, place.namespace)
        server = sandman_server(cluster, place, root)
        http = httpx.Client(
            base_url=f"{server.url}/api/v1",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=300,
        )
        try:
            first, session_id = create(http, "bench")  # the user's claim is made and bound
            http.delete(f"/sessions/{session_id}").raise_for_status()
            for _ in range(args.rounds):  # interleaved so both see the same machine state
                elapsed, name = bare.start()
                bare_times.append(elapsed)
                bare.remove(name)
                elapsed, session_id = create(http, "bench")
                sandman_times.append(elapsed)
                http.delete(f"/sessions/{session_id}").raise_for_status()

            n = args.concurrent
            for i in range(n):  # their claims are made and bound first, untimed
                _, session_id = create(http, f"conc{i}")
                http.delete(f"/sessions/{session_id}").raise_for_status()
            began = time.perf_counter()
            with ThreadPoolExecutor(n) as pool:
                bare_started = list(pool.map(lambda _: bare.start(), range(n)))
            bare_wall = time.perf_counter() - began
            for _, name in bare_started:
                bare.remove(name)
            began = time.perf_counter()
            with ThreadPoolExecutor(n) as pool:
                created = list(pool.map(lambda i: create(http, f"conc{i}"), range(n)))
            sandman_wall = time.perf_counter() - began
        finally:
            with contextlib.suppress(httpx.HTTPError):
                http.delete("/sessions")
            server.stop()

    ratio = statistics.median(sandman_times) / statistics.median(bare_times)
    print(f"Kubernetes 1.20 node, create until sshd answers, {args.rounds} rounds, interleaved")
    print(summarize("bare kubectl run", bare_times))
    print(summarize("sandman POST /sessions", sandman_times))
    print(f"median ratio sandman/bare: {ratio:.2f}x")
    print(f"a new user's first session (claim made and bound): {first * 1000:.0f} ms")
    print(
        f"{n} concurrent: bare {bare_wall:.1f} s, sandman {sandman_wall:.1f} s "
        f"(ratio {sandman_wall / bare_wall:.2f}x; returning users, their claims bound); "
        f"per-request sandman median {statistics.median(t for t, _ in created) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
