"""Fixtures for tests on the real Docker engine, real sshd and the real OpenSSH client.

Each Sandman under test gets its own data directory, container prefix and
deployment label; teardown removes exactly the containers carrying that label
and prints their logs when a test failed.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from fastapi.testclient import TestClient
from tests.integration.support import TOKEN, Server, free_port

from sandman.api.app import create_app
from sandman.config import Settings
from sandman.core import Sandman
from sandman.errors import ConfigurationError
from sandman.image.build import WORKSPACE_IMAGE, image_exists
from sandman.runtime.docker.images import unmount_below
from sandman.runtime.docker.iptables import unseal

TEST_NETWORK = "sandman-test-net"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    client = docker.from_env(version="auto")
    client.ping()
    assert image_exists(WORKSPACE_IMAGE), "run `make test` (scripts/setup.sh builds the image)"
    yield client
    for network in client.networks.list(names=[TEST_NETWORK]):
        network.reload()
        if not network.attrs.get("Containers"):
            network.remove()


@dataclass
class Harness:
    core: Sandman
    client: TestClient
    data_dir: Path
    headers: dict[str, str]

    def create(self, user_id: str, **body: Any) -> Any:
        return self.client.post(
            "/api/v1/sessions", json={"user_id": user_id, **body}, headers=self.headers
        )

    def containers(self) -> list[Any]:
        return docker.from_env(version="auto").containers.list(
            all=True, filters={"label": f"sandman.deployment={self.core.deployment_id}"}
        )


def test_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "admin_token": TOKEN,
        "container_prefix": f"smt-{uuid.uuid4().hex[:6]}",
        "network_name": TEST_NETWORK,
        "stop_grace_period": 1,
        "gpu_topology": "a100-40gb-7x1g",
        "ttl_check_interval": "1h",
        "reconcile_interval": "1h",
        # The tests run the reconciler by hand on sessions seconds old.
        "reconcile_grace": 0,
        "cpus": 1,
        "memory": "512m",
        "ssh_listen": "127.0.0.1:0",
    }
    values.update(overrides)
    return Settings(**values)


def remove_deployment_containers(deployment_id: str, show_logs: bool) -> None:
    client = docker.from_env(version="auto")
    for container in client.containers.list(
        all=True, filters={"label": f"sandman.deployment={deployment_id}"}
    ):
        if show_logs:
            print(
                f"--- logs of {container.name}:\n{container.logs(tail=40).decode(errors='replace')}"
            )
        container.remove(force=True)


def remove_firewall_rules(deployment_id: str) -> None:
    """The deployment's sealing rules; they outlive Sandman, as they must in production."""
    with contextlib.suppress(ConfigurationError):  # no iptables here: nothing installed
        unseal(deployment_id)


@pytest.fixture(autouse=True)
def unmount_workspaces(tmp_path: Path) -> Iterator[None]:
    """Workspace images mounted under the test's directory are unmounted once the test's
    Sandmans and containers are gone (Sandman leaves them mounted when it stops, as
    session containers may outlive it), and no loop device may be left holding one."""
    yield
    unmount_below(tmp_path)
    root = str(tmp_path.resolve()) + "/"
    deadline = time.monotonic() + 5
    while (held := loops_below(root)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not held, f"loop devices still hold workspace images: {held}"


def loops_below(root: str) -> list[str]:
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            if backing.read_text().startswith(root):
                found.append(backing.parent.parent.name)
    return found


@pytest.fixture
def make_harness(
    docker_client: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**overrides: Any) -> Harness:
        data_dir = tmp_path / f"sandman{len(made)}"
        core = Sandman(test_settings(data_dir, **overrides), announce=lambda _: None)
        client = TestClient(create_app(core, run_background=False))
        client.__enter__()
        core.runtime.prepare()
        harness = Harness(core, client, data_dir, {"Authorization": f"Bearer {TOKEN}"})
        made.append(harness)
        return harness

    yield make
    failed = bool(getattr(request.node, "rep_call", None) and request.node.rep_call.failed)
    for harness in made:
        try:
            harness.core.sessions.end_all("test teardown")
        finally:
            remove_deployment_containers(harness.core.deployment_id, failed)
            remove_firewall_rules(harness.core.deployment_id)
            harness.client.__exit__(None, None, None)
            harness.core.stop()


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def server(docker_client: Any, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(**settings: str) -> Server:
        port = free_port()
        env = {
            **os.environ,
            "SANDMAN_DATA_DIR": str(tmp_path / "data"),
            "SANDMAN_ADMIN_TOKEN": TOKEN,
            "SANDMAN_PORT": str(port),
            "SANDMAN_CONTAINER_PREFIX": f"smc-{uuid.uuid4().hex[:6]}",
            "SANDMAN_NETWORK_NAME": TEST_NETWORK,
            "SANDMAN_CPUS": "0.5",
            "SANDMAN_MEMORY": "256m",
            "SANDMAN_STOP_GRACE_PERIOD": "1",
            "SANDMAN_LOG_LEVEL": "WARNING",
            "SANDMAN_SSH_MODE": "both",
            "SANDMAN_SSH_LISTEN": f"127.0.0.1:{free_port()}",
            **{f"SANDMAN_{k.upper()}": v for k, v in settings.items()},
        }
        (tmp_path / "data").mkdir(exist_ok=True)
        found = Server(tmp_path / "data", env, f"http://127.0.0.1:{port}")
        made.append(found)
        return found

    yield make
    for found in made:
        found.stop()
    if made:
        deployment = made[0].deployment()
        remove_deployment_containers(deployment, show_logs=False)
        remove_firewall_rules(deployment)
