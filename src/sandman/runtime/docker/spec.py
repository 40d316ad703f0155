"""Translate a ``ContainerSpec`` into Docker SDK arguments (pure, unit-tested)."""

from __future__ import annotations

from typing import Any

from sandman.runtime.base import ContainerSpec


def parse_size(value: str) -> int:
    """``"2g"``, ``"512m"``, ``"64k"`` or bytes, as bytes (Docker's own units)."""
    text = value.strip().lower().removesuffix("b")
    units = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def container_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    """Arguments for ``client.containers.create`` that harden the container.

    No capabilities, no privilege escalation, an init process to reap zombies,
    limits on CPU, memory and processes, and ports published only where asked.
    """
    from docker.types import DeviceRequest, Mount

    kwargs: dict[str, Any] = {
        "image": spec.image,
        "command": list(spec.command),
        "name": spec.name,
        "hostname": spec.hostname,
        "user": spec.user,
        "environment": dict(spec.environment),
        "labels": dict(spec.labels),
        "detach": True,
        "init": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "pids_limit": spec.pids_limit,
        "nano_cpus": int(spec.cpus * 1e9),
        "mem_limit": parse_size(spec.memory),
        "shm_size": spec.shm_size,
        "network": spec.network,
        "mounts": [
            Mount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
            for m in spec.mounts
        ],
        "ports": {f"{p.container_port}/tcp": (p.host_ip, p.host_port) for p in spec.ports},
        "restart_policy": {"Name": "no"},
        "log_config": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "2"}},
    }
    if spec.gpu_device_ids:
        kwargs["device_requests"] = [
            DeviceRequest(
                driver="nvidia", device_ids=list(spec.gpu_device_ids), capabilities=[["gpu"]]
            )
        ]
    return kwargs
