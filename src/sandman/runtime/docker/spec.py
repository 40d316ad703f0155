"""Translate a ``SessionLaunch`` into Docker SDK arguments (pure, unit-tested)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sandman.runtime.base import SSHD_PORT, SessionLaunch
from sandman.runtime.docker.files import Mount


def parse_size(value: str) -> int:
    """``"2g"``, ``"512m"``, ``"64k"`` or bytes, as bytes (Docker's own units)."""
    text = value.strip().lower().removesuffix("b")
    units = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def restart_policy(live_restore: bool) -> str:
    """What brings a session back when the engine restarts.

    With the engine's live restore, running containers outlive the engine
    restarting, so they need no policy (and a session whose process exits stays
    down, for the reconciler to see). Without it, the engine stops every
    container when it stops; ``unless-stopped`` starts them again (their
    processes are lost, their workspaces are not).
    """
    return "no" if live_restore else "unless-stopped"


def container_kwargs(
    launch: SessionLaunch,
    mounts: Sequence[Mount],
    network: str,
    bind_address: str,
    restart: str = "no",
) -> dict[str, Any]:
    """Arguments for ``client.containers.create`` that harden the container.

    No capabilities, no privilege escalation, an init process to reap zombies,
    limits on CPU, memory and processes, and sshd published only where asked.
    """
    from docker.types import DeviceRequest
    from docker.types import Mount as DockerMount

    kwargs: dict[str, Any] = {
        "image": launch.image,
        "command": list(launch.command),
        "name": launch.name,
        "hostname": launch.hostname,
        "user": launch.user,
        "environment": dict(launch.environment),
        "labels": dict(launch.labels),
        "detach": True,
        "init": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "pids_limit": launch.pids_limit,
        "nano_cpus": int(launch.cpus * 1e9),
        "mem_limit": parse_size(launch.memory),
        "shm_size": launch.shm_size,
        "network": network,
        "mounts": [
            DockerMount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
            for m in mounts
        ],
        "ports": (
            {f"{SSHD_PORT}/tcp": (bind_address, launch.host_port)}
            if launch.host_port is not None
            else {}
        ),
        "restart_policy": {"Name": restart},
        "log_config": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "2"}},
    }
    if launch.gpu.real and launch.gpu.device_ids:
        kwargs["device_requests"] = [
            DeviceRequest(
                driver="nvidia", device_ids=list(launch.gpu.device_ids), capabilities=[["gpu"]]
            )
        ]
    return kwargs
