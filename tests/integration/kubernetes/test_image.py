"""Sandman's own image (deploy/kubernetes/image) runs as the Deployments constrain it
and drives the real cluster: user 10001, a read-only root, tmpfs where the pods have
volumes (the data claim, /tmp), every capability dropped, no new privileges, the
Deployment's memory and CPU limits. A session created through its API is a running
pod with its Secret; DELETE takes both away.

The pods would reach the API server with their service account; here the container
shares the host's network (the API server listens on 127.0.0.1) and a kubeconfig
mounted read-only, CA and token inside, stands for those credentials.

The image is built (build.sh) when the engine has none, or one whose
``org.sandman.source`` label differs from ``build.sh --source``: the checkout's src/,
pyproject.toml, Dockerfile and base image. Otherwise the check costs a hash.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.kubernetes.cluster import LocalCluster, free_port
from tests.integration.kubernetes.support import Place, pods, session_namespace
from tests.integration.support import HEADERS, TOKEN

ROOT = Path(__file__).resolve().parents[3]
BUILD = ROOT / "deploy" / "kubernetes" / "image" / "build.sh"
IMAGE = "sandman-kubernetes:latest"
SOURCE_LABEL = "org.sandman.source"
TEST_LABEL = "sandman.test=kubernetes-image"
KUBECONFIG = "/etc/sandman/kubeconfig"
PROFILE = "1g.5gb"


def docker(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert not check or done.returncode == 0, f"docker {' '.join(args)}:\n{done.stderr}"
    return done


def image_source() -> str | None:
    """The image's source label; None without the image."""
    done = docker("image", "inspect", IMAGE, check=False)
    if done.returncode != 0:
        return None
    labels = json.loads(done.stdout)[0]["Config"]["Labels"] or {}
    found: str | None = labels.get(SOURCE_LABEL)
    return found


@pytest.fixture(scope="module")
def image() -> str:
    """The image, as built from this checkout (a rebuild only when it is not)."""
    wanted = subprocess.run(
        [str(BUILD), "--source"], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    assert len(wanted) == 64, wanted
    if image_source() != wanted:
        built = subprocess.run(
            [str(BUILD), IMAGE], capture_output=True, text=True, timeout=1200, check=False
        )
        assert built.returncode == 0, f"build.sh failed:\n{built.stderr[-4000:]}"
        assert image_source() == wanted, "the rebuilt image does not carry the checkout's label"
    return IMAGE


@pytest.fixture(scope="module")
def place(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Place]:
    with session_namespace(cluster, tmp_path_factory.mktemp("kube-image"), 2) as found:
        yield found


def standalone_kubeconfig(cluster: LocalCluster, path: Path) -> Path:
    """The cluster's admin kubeconfig with its CA inside, readable by user 10001."""
    config = json.loads(cluster.kubeconfig_path.read_text())
    for entry in config["clusters"]:
        ca = Path(entry["cluster"].pop("certificate-authority"))
        entry["cluster"]["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    path.write_text(json.dumps(config))
    path.chmod(0o644)
    return path


class Container:
    """``sandman serve`` in the image, under the Deployment's constraints."""

    def __init__(self, image: str, env: dict[str, str], kubeconfig: Path, env_file: Path) -> None:
        self.name = f"sandman-test-image-{uuid.uuid4().hex[:8]}"
        self.url = f"http://127.0.0.1:{env['SANDMAN_PORT']}"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        env_file.chmod(0o600)  # docker reads it, not the container
        self.argv = [
            "run", "--detach", "--name", self.name, "--label", TEST_LABEL,
            "--user", "10001:10001", "--read-only",
            "--tmpfs", "/var/lib/sandman:rw,uid=10001,gid=10001,mode=0770",  # the data claim
            "--tmpfs", "/tmp:rw,exec,mode=1777",  # the emptyDir
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--memory", "1g", "--cpus", "2",  # the api container's limits
            "--network", "host",
            "--mount", f"type=bind,source={kubeconfig},target={KUBECONFIG},readonly",
            "--env-file", str(env_file),
            image, "serve",
        ]  # fmt: skip

    def start(self) -> None:
        docker(*self.argv)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            state = json.loads(docker("inspect", self.name).stdout)[0]["State"]
            assert state["Running"], f"the container stopped:\n{self.logs()}"
            time.sleep(0.5)
        raise AssertionError(f"sandman serve in the image did not answer:\n{self.logs()}")

    def logs(self) -> str:
        done = docker("logs", "--tail", "80", self.name, check=False)
        return done.stdout + done.stderr

    def remove(self) -> None:
        docker("rm", "--force", self.name, check=False)


@pytest.fixture
def container(
    image: str, cluster: LocalCluster, place: Place, tmp_path: Path
) -> Iterator[Container]:
    env = {
        **place.env(cluster),
        "SANDMAN_KUBE_CONFIG": KUBECONFIG,
        "SANDMAN_ADMIN_TOKEN": TOKEN,
        "SANDMAN_HOST": "127.0.0.1",
        "SANDMAN_PORT": str(free_port()),
        "SANDMAN_SSH_LISTEN": f"127.0.0.1:{free_port()}",
        "SANDMAN_APPS_LISTEN": "off",
        "SANDMAN_LOG_LEVEL": "INFO",
        "SANDMAN_STOP_GRACE_PERIOD": "1",
    }
    kubeconfig = standalone_kubeconfig(cluster, tmp_path / "kubeconfig")
    found = Container(image, env, kubeconfig, tmp_path / "env")
    try:
        found.start()
        yield found
    finally:
        found.remove()
        left = docker("ps", "-aq", "--filter", f"name={found.name}").stdout.strip()
        assert not left, f"container {found.name} was not removed"


def session_pod(cluster: LocalCluster, namespace: str, session_id: str) -> dict[str, Any] | None:
    matching = [
        p for p in pods(cluster, namespace) if p["metadata"]["labels"].get("sandman.session_id")
        == session_id
    ]  # fmt: skip
    return matching[0] if matching else None


def exists(cluster: LocalCluster, kind: str, name: str, namespace: str) -> bool:
    done = cluster.kubectl("get", kind, name, "-n", namespace, check=False)
    assert done.returncode == 0 or "NotFound" in done.stderr, done.stderr
    return done.returncode == 0


@pytest.mark.timeout(1500)  # a rebuild of the image included
def test_the_image_runs_hardened_and_makes_and_ends_a_session_pod(
    container: Container, cluster: LocalCluster, place: Place
) -> None:
    # Sandman itself (pid 1) runs as 10001 without any capability.
    status = docker("exec", container.name, "cat", "/proc/1/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split() == ["10001"] * 4, fields["Uid"]
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapBnd"], 16) == 0, fields
    assert fields["NoNewPrivs"].strip() == "1"
    # The root is read-only: the process can write only where the pod has volumes.
    refused = docker("exec", container.name, "touch", "/opt/sandman/x", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr, refused

    created = httpx.post(
        f"{container.url}/api/v1/sessions",
        json={"user_id": "imaged", "mig_profile": PROFILE},
        headers=HEADERS,
        timeout=180,
    )
    assert created.status_code == 201, f"{created.text}\n{container.logs()}"
    session = created.json()
    pod = session_pod(cluster, place.namespace, session["session_id"])
    assert pod is not None, container.logs()
    assert pod["status"]["phase"] == "Running", pod["status"]
    assert pod["spec"]["nodeName"] == cluster.node_name
    [main] = pod["spec"]["containers"]
    assert main["resources"]["limits"][f"nvidia.com/mig-{PROFILE}"] == "1"
    secrets = [v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v]
    assert secrets, pod["spec"]["volumes"]
    for name in secrets:
        assert exists(cluster, "secret", name, place.namespace), name

    deleted = httpx.delete(
        f"{container.url}/api/v1/sessions/{session['session_id']}", headers=HEADERS, timeout=180
    )
    assert deleted.status_code in (200, 204), deleted.text
    deadline = time.monotonic() + 120
    while exists(cluster, "pod", pod["metadata"]["name"], place.namespace):
        assert time.monotonic() < deadline, "the session's pod is still there"
        time.sleep(1)
    for name in secrets:
        assert not exists(cluster, "secret", name, place.namespace), name
    ended = httpx.get(
        f"{container.url}/api/v1/sessions/{session['session_id']}", headers=HEADERS, timeout=30
    )
    assert ended.json()["status"] == "deleted", ended.text
