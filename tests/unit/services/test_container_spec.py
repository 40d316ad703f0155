from __future__ import annotations

from pathlib import Path

from sandman.runtime.docker.spec import container_kwargs, parse_size
from sandman.services.container_spec import (
    SessionContainer,
    session_container_spec,
    session_environment,
)
from sandman.services.files import SessionPaths

PATHS = SessionPaths(
    ssh_dir=Path("/data/sessions/s1/ssh"),
    passwd=Path("/data/sessions/s1/passwd"),
    group=Path("/data/sessions/s1/group"),
    workspace=Path("/srv/workspaces/alice"),
)


def _session(**overrides: object) -> SessionContainer:
    values: dict[str, object] = {
        "session_id": "s1", "user_id": "alice", "uid": 20001, "gid": 20001,
        "image": "sandman-workspace:latest", "name": "sandman-alice", "network": "worknet",
        "deployment_id": "dep1", "ssh_bind_address": "127.0.0.1", "ssh_port": 10001,
        "cpus": 2.0, "memory": "8g", "pids_limit": 1024, "shm_size": "2g",
        "gpu_uuids": ("MIG-1234",), "mig_profile": "1g.5gb", "real_gpus": False,
    }  # fmt: skip
    values.update(overrides)
    return SessionContainer(**values)  # type: ignore[arg-type]


def test_the_container_is_hardened() -> None:
    kwargs = container_kwargs(session_container_spec(_session(), PATHS))
    assert kwargs["cap_drop"] == ["ALL"]
    assert kwargs["security_opt"] == ["no-new-privileges:true"]
    assert kwargs["init"] is True
    assert kwargs["user"] == "20001:20001"
    assert kwargs["pids_limit"] == 1024
    assert kwargs["nano_cpus"] == 2_000_000_000
    assert kwargs["mem_limit"] == 8 * 1024**3
    assert kwargs["shm_size"] == "2g"
    assert kwargs["ports"] == {"2222/tcp": ("127.0.0.1", 10001)}
    assert kwargs["name"] == "sandman-alice" and kwargs["network"] == "worknet"
    assert "privileged" not in kwargs and "cap_add" not in kwargs
    assert kwargs["labels"] == {
        "sandman.managed": "true",
        "sandman.session_id": "s1",
        "sandman.user_id": "alice",
        "sandman.deployment": "dep1",
    }


def test_only_the_workspace_is_writable_and_no_socket_is_mounted() -> None:
    mounts = container_kwargs(session_container_spec(_session(), PATHS))["mounts"]
    by_target = {m["Target"]: m for m in mounts}
    assert set(by_target) == {"/workspace", "/etc/sandman/ssh", "/etc/passwd", "/etc/group"}
    assert [t for t, m in by_target.items() if not m["ReadOnly"]] == ["/workspace"]
    assert by_target["/workspace"]["Source"] == "/srv/workspaces/alice"
    assert not any("docker.sock" in m["Source"] for m in mounts)


def test_gpu_reaches_the_container() -> None:
    simulated = container_kwargs(session_container_spec(_session(), PATHS))
    assert simulated["environment"]["NVIDIA_VISIBLE_DEVICES"] == "MIG-1234"
    assert simulated["environment"]["SANDMAN_GPU_UUID"] == "MIG-1234"
    assert "device_requests" not in simulated
    real = container_kwargs(session_container_spec(_session(real_gpus=True), PATHS))
    (request,) = real["device_requests"]
    assert request["Driver"] == "nvidia" and request["DeviceIDs"] == ["MIG-1234"]
    none = session_environment(_session(gpu_uuids=(), mig_profile=None))
    assert none["NVIDIA_VISIBLE_DEVICES"] == "void" and "SANDMAN_MIG_PROFILE" not in none


def test_sizes() -> None:
    assert parse_size("2g") == 2 * 1024**3
    assert parse_size("512m") == 512 * 1024**2
    assert parse_size("1.5G") == int(1.5 * 1024**3)
    assert parse_size("1024") == 1024
