"""The seed documents' flags and names, through ``sandman serve`` itself."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from tests.integration.support import TOKEN, Server, free_port


def test_seed_port_flags_and_piper_directory(server: Callable[..., Server], tmp_path: Path) -> None:
    start = free_port()
    while start > 60000:
        start = free_port()
    piper_dir = tmp_path / "sshpiper"
    sandman = server(ssh_mode="both")
    sandman.env["SSHPIPER_CONFIG_DIR"] = str(piper_dir)
    sandman.start_args = ["--ssh-port-start", str(start), "--ssh-port-end", str(start + 2)]
    sandman.start()
    created = sandman.create("seeduser", gpu_count=0)
    assert created.status_code == 201, created.text
    assert start <= created.json()["direct_ssh_port"] <= start + 2
    pipes = yaml.safe_load((piper_dir / "pipe.yaml").read_text())["pipes"]
    assert [p["from"][0]["username"] for p in pipes] == ["seeduser"]


def test_sshpiper_in_direct_mode_says_which_mode_to_use(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "SANDMAN_DATA_DIR": str(tmp_path),
        "SANDMAN_ADMIN_TOKEN": TOKEN,
        "SANDMAN_CONTAINER_PREFIX": f"smd-{uuid.uuid4().hex[:6]}",
    }
    result = subprocess.run(
        [sys.executable, "-m", "sandman.cli", "serve", "--ssh-mode", "direct",
         "--piper-config", str(tmp_path / "pipe.yaml"), "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--ssh-mode gateway or both" in result.stderr


def test_a_session_network_that_lets_containers_meet_is_refused(
    docker_client: Any, tmp_path: Path
) -> None:
    name = f"sandman-icc-{uuid.uuid4().hex[:8]}"
    network = docker_client.networks.create(name, driver="bridge")  # icc on: Docker's default
    try:
        env = {
            **os.environ,
            "SANDMAN_DATA_DIR": str(tmp_path),
            "SANDMAN_ADMIN_TOKEN": TOKEN,
            "SANDMAN_NETWORK_NAME": name,
            "SANDMAN_CONTAINER_PREFIX": f"smi-{uuid.uuid4().hex[:6]}",
            "SANDMAN_SSH_LISTEN": f"127.0.0.1:{free_port()}",
        }
        result = subprocess.run(
            [sys.executable, "-m", "sandman.cli", "serve", "--port", str(free_port())],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        said = " ".join(result.stderr.split())  # the console wraps long lines
        assert result.returncode == 2, said
        assert "lets containers reach each other" in said
        assert f"docker network rm {name}" in said
    finally:
        network.remove()
