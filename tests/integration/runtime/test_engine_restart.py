"""A session survives its engine restarting: on an engine this test owns (a private
``dockerd`` with its own data root, socket, bridge and address pools, and no
firewall rules, used by no other test), restarted while a session runs, started
with live restore as ``scripts/setup.sh`` starts the engine it manages.

The private engine must never touch the shared one: ``--bridge none`` would make
it delete the shared ``docker0`` as a stale default bridge, and default address
pools would overlap the shared engine's networks. So it gets a bridge this test
creates (``smtb…``, 10.214.x.0/24) and pools of its own (10.215.0.0/16).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from fastapi.testclient import TestClient
from tests.integration.conftest import test_settings as settings_for
from tests.integration.support import HEADERS, ssh, write_key

from sandman.api.app import create_app
from sandman.core import Sandman
from sandman.image.build import WORKSPACE_IMAGE
from sandman.runtime.docker import DockerRuntime
from sandman.runtime.docker.files import HostFiles


class PrivateEngine:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = f"unix://{root}/docker.sock"
        self.process: subprocess.Popen[bytes] | None = None
        self.bridge = f"smtb{uuid.uuid4().hex[:8]}"

    def create_bridge(self) -> None:
        subnet = random.randint(1, 250)
        for argv in (
            ["ip", "link", "add", "name", self.bridge, "type", "bridge"],
            ["ip", "addr", "add", f"10.214.{subnet}.1/24", "dev", self.bridge],
            ["ip", "link", "set", self.bridge, "up"],
        ):
            subprocess.run(argv, check=True, capture_output=True, timeout=30)

    def delete_bridge(self) -> None:
        subprocess.run(["ip", "link", "delete", self.bridge], check=False, capture_output=True)

    def start(self) -> None:
        log = open(self.root / "dockerd.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            ["dockerd", "--live-restore", "--data-root", str(self.root / "data"),
             "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "pid"),
             "-H", self.socket, "--bridge", self.bridge,
             "--default-address-pool", "base=10.215.0.0/16,size=24",
             "--iptables=false", "--ip6tables=false", "--ip-masq=false"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                docker.DockerClient(base_url=self.socket, version="auto").ping()
                return
            except Exception:
                assert self.process.poll() is None, (self.root / "dockerd.log").read_text()
                time.sleep(0.3)
        raise AssertionError("the private dockerd did not answer")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)


@pytest.fixture
def engine(docker_client: docker.DockerClient) -> Iterator[PrivateEngine]:
    root = Path(tempfile.mkdtemp(prefix="sandman-engine-", dir="/var/tmp"))
    found = PrivateEngine(root)
    found.create_bridge()
    try:
        found.start()
        # the workspace image, copied from the shared engine
        save = subprocess.Popen(["docker", "save", WORKSPACE_IMAGE], stdout=subprocess.PIPE)
        subprocess.run(["docker", "-H", found.socket, "load", "-q"], stdin=save.stdout,
                       check=True, capture_output=True, timeout=300)  # fmt: skip
        assert save.wait(timeout=60) == 0
        yield found
    finally:
        if found.process is not None and found.process.poll() is None:
            client = docker.DockerClient(base_url=found.socket, version="auto")
            for container in client.containers.list(all=True):
                container.remove(force=True)
            for network in client.networks.list():
                if network.name not in ("bridge", "host", "none"):
                    network.remove()  # its bridge interface goes with it
        found.stop()
        found.delete_bridge()
        for mount in reversed(Path("/proc/mounts").read_text().splitlines()):
            target = mount.split()[1]
            if target.startswith(str(root)):
                subprocess.run(["umount", "-l", target], check=False)
        shutil.rmtree(root, ignore_errors=True)


def test_a_session_survives_its_engine_restarting(engine: PrivateEngine, tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path / "sandman", network_name=f"sandman-restart-{uuid.uuid4().hex[:6]}"
    )
    runtime = DockerRuntime(
        HostFiles(settings.data_dir, settings.effective_workspace_root),
        network=settings.network_name,
        base_url=engine.socket,
    )
    core = Sandman(settings, runtime=runtime, announce=lambda _: None)
    with TestClient(create_app(core, run_background=False)) as client:
        runtime.prepare()
        created = client.post("/api/v1/sessions", json={"user_id": "rita"}, headers=HEADERS)
        assert created.status_code == 201, created.text
        session = created.json()
        key = write_key(tmp_path, session["ssh_private_key"])
        assert ssh(session, key, "echo $((6 * 7)) > /workspace/answer").returncode == 0
        sleeper = ssh(session, key, "nohup sleep 600 >/dev/null 2>&1 & echo $!")
        assert sleeper.returncode == 0, sleeper.stderr

        engine.stop()
        engine.start()

        result = ssh(session, key, f"cat /workspace/answer; kill -0 {sleeper.stdout.strip()}")
        assert result.returncode == 0, result.stderr  # the session's processes still run
        assert result.stdout.strip() == "42"
        report = core.reconciler.run_once()
        assert report.ended_sessions == [] and report.errors == [], report
        after = client.get(f"/api/v1/sessions/{session['session_id']}", headers=HEADERS)
        assert after.json()["status"] == "running"
        client.delete(f"/api/v1/sessions/{session['session_id']}", headers=HEADERS)
    core.stop()
    assert os.path.exists(settings.effective_workspace_root / "rita" / "answer")
