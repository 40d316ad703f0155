"""Session creation latency: ``POST /sessions`` until sshd answers, against a raw
``docker run`` of the same image until its sshd answers, in the same run.

Run: ``.venv/bin/python bench/bench_sessions.py [--rounds 20] [--concurrent 20]``.
It starts its own ``sandman serve`` (simulated h100-80gb-x8, dynamic MIG) on
127.0.0.1, and removes every container it started.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from support import TOKEN, Server, free_port

from sandman.image.accounts import passwd_and_group
from sandman.image.build import WORKSPACE_IMAGE
from sandman.runtime.docker.images import unmount_below
from sandman.services.keys import generate_key_pair
from sandman.services.readiness import wait_for_sshd

LABEL = {"sandman.bench": "true"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class RawDocker:
    """The baseline: the same image, hardening and mounts, started directly."""

    def __init__(self, root: Path) -> None:
        self.client = docker.from_env(version="auto")
        self.root = root
        uid = 30999
        ssh_dir = root / "raw-ssh"
        ssh_dir.mkdir()
        host = generate_key_pair("raw-host")
        user = generate_key_pair("raw-user")
        (ssh_dir / "ssh_host_ed25519_key").write_text(host.private_openssh)
        (ssh_dir / "ssh_host_ed25519_key.pub").write_text(host.public_openssh + "\n")
        (ssh_dir / "authorized_keys").write_text(user.public_openssh + "\n")
        for path in ssh_dir.iterdir():
            os.chown(path, uid, uid)
        os.chmod(ssh_dir / "ssh_host_ed25519_key", 0o600)
        passwd, group = passwd_and_group("rawuser", uid, uid)
        (root / "passwd").write_text(passwd)
        (root / "group").write_text(group)
        workspace = root / "raw-workspace"
        workspace.mkdir()
        os.chown(workspace, uid, uid)
        self.kwargs: dict[str, Any] = {
            "image": WORKSPACE_IMAGE,
            "command": ["/usr/sbin/sshd", "-D", "-e", "-f", "/etc/sandman/sshd_config"],
            "user": f"{uid}:{uid}",
            "detach": True,
            "init": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "labels": LABEL,
            "volumes": {
                str(workspace): {"bind": "/workspace", "mode": "rw"},
                str(ssh_dir): {"bind": "/etc/sandman/ssh", "mode": "ro"},
                str(root / "passwd"): {"bind": "/etc/passwd", "mode": "ro"},
                str(root / "group"): {"bind": "/etc/group", "mode": "ro"},
            },
        }

    def start(self) -> tuple[float, str]:
        port = free_port()
        began = time.perf_counter()
        container = self.client.containers.run(
            name=f"sandman-bench-raw-{uuid.uuid4().hex[:8]}",
            ports={"2222/tcp": ("127.0.0.1", port)},
            **self.kwargs,
        )
        wait_for_sshd("127.0.0.1", port, 60)
        return time.perf_counter() - began, container.id

    def remove(self, container_id: str) -> None:
        self.client.api.remove_container(container_id, force=True)


class SandmanServer:
    """A real ``sandman serve`` (the integration tests' ``Server``) and an API client."""

    def __init__(self, root: Path) -> None:
        port = free_port()
        data_dir = root / "sandman"
        data_dir.mkdir()
        self.server = Server(
            data_dir,
            {
                **os.environ,
                "SANDMAN_DATA_DIR": str(data_dir),
                "SANDMAN_ADMIN_TOKEN": TOKEN,
                "SANDMAN_PORT": str(port),
                "SANDMAN_GPU_TOPOLOGY": "h100-80gb-x8",
                "SANDMAN_CONTAINER_PREFIX": f"smb-{uuid.uuid4().hex[:6]}",
                "SANDMAN_NETWORK_NAME": "sandman-bench-net",
                "SANDMAN_STOP_GRACE_PERIOD": "0",
                "SANDMAN_LOG_LEVEL": "WARNING",
                "SANDMAN_CPUS": "1",
                "SANDMAN_MEMORY": "512m",
                "SANDMAN_SSH_MODE": "both",
                "SANDMAN_SSH_LISTEN": f"127.0.0.1:{free_port()}",
            },
            f"http://127.0.0.1:{port}",
        )
        self.server.start()
        self.http = httpx.Client(
            base_url=f"{self.server.url}/api/v1",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=120,
        )

    def create(self, user: str) -> tuple[float, str]:
        began = time.perf_counter()
        response = self.http.post("/sessions", json={"user_id": user, "mig_profile": "1g.10gb"})
        elapsed = time.perf_counter() - began
        response.raise_for_status()
        body = response.json()
        # POST returns only once sshd answers; confirm from outside, untimed.
        wait_for_sshd("127.0.0.1", body["direct_ssh_port"], 5)
        return elapsed, body["session_id"]

    def delete(self, session_id: str) -> None:
        self.http.delete(f"/sessions/{session_id}").raise_for_status()

    def close(self) -> None:
        # what this leaves, the caller removes by the deployment's label
        with contextlib.suppress(httpx.HTTPError):
            self.http.delete("/sessions")
        self.server.stop()


def summarize(name: str, values: list[float]) -> str:
    return (
        f"{name:<28} median {statistics.median(values) * 1000:7.0f} ms   "
        f"p95 {percentile(values, 0.95) * 1000:7.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=20)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sandman-bench-"))
    raw = RawDocker(root)
    server: SandmanServer | None = None
    raw_times: list[float] = []
    sandman_times: list[float] = []
    try:
        server = SandmanServer(root)
        for i in range(args.rounds):  # interleaved so both see the same machine state
            elapsed, container_id = raw.start()
            raw_times.append(elapsed)
            raw.remove(container_id)
            elapsed, session_id = server.create(f"bench{i}")
            sandman_times.append(elapsed)
            server.delete(session_id)

        n = args.concurrent
        began = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            raw_started = list(pool.map(lambda _: raw.start(), range(n)))
        raw_wall = time.perf_counter() - began
        for _, container_id in raw_started:
            raw.remove(container_id)
        began = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            created = list(pool.map(lambda i: server.create(f"conc{i}"), range(n)))
        sandman_wall = time.perf_counter() - began
        for _, session_id in created:
            server.delete(session_id)
    finally:
        labels = ["sandman.bench=true"]
        if server is not None:
            labels.append(f"sandman.deployment={server.server.deployment()}")
            server.close()
        client = docker.from_env(version="auto")
        for label in labels:  # the baseline's containers, then any Sandman left behind
            for container in client.containers.list(all=True, filters={"label": label}):
                container.remove(force=True)
        for network in client.networks.list(names=["sandman-bench-net"]):
            network.reload()
            if not network.attrs.get("Containers"):
                network.remove()
        unmount_below(root)  # workspace images: Sandman leaves them mounted when it stops
        shutil.rmtree(root, ignore_errors=True)

    ratio = statistics.median(sandman_times) / statistics.median(raw_times)
    print(f"session creation until sshd answers, {args.rounds} rounds, interleaved")
    print(summarize("raw docker run", raw_times))
    print(summarize("sandman POST /sessions", sandman_times))
    print(f"median ratio sandman/raw: {ratio:.2f}x (goal <= 1.5x)")
    print(
        f"{n} concurrent: raw {raw_wall:.1f} s, sandman {sandman_wall:.1f} s "
        f"(ratio {sandman_wall / raw_wall:.2f}x); per-request sandman median "
        f"{statistics.median(t for t, _ in created) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
