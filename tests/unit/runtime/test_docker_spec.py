from __future__ import annotations

from typing import Any

import pytest

from sandman.runtime.docker.backend import state_from_attrs
from sandman.runtime.docker.files import Mount
from sandman.runtime.docker.spec import container_kwargs, parse_size, restart_policy
from sandman.services.container_spec import (
    SessionContainer,
    session_environment,
    session_files,
    session_launch,
    sshd_session_config,
)

MOUNTS = [
    Mount("/srv/workspaces/alice", "/workspace", read_only=False),
    Mount("/data/sessions/s1/files/etc/passwd", "/etc/passwd"),
]


def _kwargs(session: SessionContainer) -> dict[str, Any]:
    return container_kwargs(session_launch(session), MOUNTS, "worknet", "127.0.0.1")


def _session(**overrides: object) -> SessionContainer:
    values: dict[str, object] = {
        "session_id": "s1", "user_id": "alice", "uid": 20001, "gid": 20001,
        "image": "sandman-workspace:latest", "name": "sandman-alice",
        "deployment_id": "dep1", "host_port": 10001,
        "cpus": 2.0, "memory": "8g", "pids_limit": 1024, "shm_size": "2g",
        "gpu_uuids": ("MIG-1234",), "mig_profile": "1g.5gb", "real_gpus": False,
    }  # fmt: skip
    values.update(overrides)
    return SessionContainer(**values)  # type: ignore[arg-type]


def test_the_container_is_hardened() -> None:
    kwargs = _kwargs(_session())
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


def test_mounts_pass_through_and_no_socket_is_mounted() -> None:
    mounts = _kwargs(_session())["mounts"]
    by_target = {m["Target"]: m for m in mounts}
    assert set(by_target) == {"/workspace", "/etc/passwd"}
    assert [t for t, m in by_target.items() if not m["ReadOnly"]] == ["/workspace"]
    assert by_target["/workspace"]["Source"] == "/srv/workspaces/alice"
    assert not any("docker.sock" in m["Source"] for m in mounts)


def test_the_session_files_are_sshds_and_the_accounts() -> None:
    session = _session(authorized_keys=("ssh-ed25519 AAAA k",), host_key=("PRIV", "ssh-ed25519 P"))
    files = {f.path: f for f in session_files(session)}
    assert set(files) == {
        "/etc/sandman/ssh/ssh_host_ed25519_key",
        "/etc/sandman/ssh/ssh_host_ed25519_key.pub",
        "/etc/sandman/ssh/authorized_keys",
        "/etc/sandman/ssh/sshd_session.conf",
        "/etc/passwd",
        "/etc/group",
    }
    key = files["/etc/sandman/ssh/ssh_host_ed25519_key"]
    assert key.content == "PRIV" and key.mode == 0o600 and key.owned_by_user
    assert files["/etc/sandman/ssh/authorized_keys"].content == "ssh-ed25519 AAAA k\n"
    assert "alice:x:20001:20001:" in files["/etc/passwd"].content
    assert not files["/etc/passwd"].owned_by_user
    assert "SANDMAN_MIG_PROFILE=1g.5gb" in files["/etc/sandman/ssh/sshd_session.conf"].content


def test_sessions_come_back_after_an_engine_restart_without_live_restore() -> None:
    assert restart_policy(live_restore=True) == "no"
    assert restart_policy(live_restore=False) == "unless-stopped"
    kwargs = container_kwargs(
        session_launch(_session()), MOUNTS, "worknet", "127.0.0.1", restart_policy(False)
    )
    assert kwargs["restart_policy"] == {"Name": "unless-stopped"}
    assert _kwargs(_session())["restart_policy"] == {"Name": "no"}


def test_no_port_is_published_without_a_host_port() -> None:
    assert _kwargs(_session(host_port=None))["ports"] == {}


@pytest.mark.parametrize(
    ("upstream", "endpoint"),
    [("published", ("127.0.0.1", 10001)), ("network", ("172.18.0.5", 2222))],
)
def test_the_endpoint_follows_the_upstream_mode(upstream: str, endpoint: tuple[str, int]) -> None:
    attrs = {
        "Id": "c1",
        "Name": "/sandman-alice",
        "State": {"Running": True, "Status": "running", "ExitCode": 0},
        "Config": {"Labels": {"sandman.session_id": "s1"}},
        "NetworkSettings": {
            "Networks": {"worknet": {"IPAddress": "172.18.0.5"}},
            "Ports": {"2222/tcp": [{"HostIp": "127.0.0.1", "HostPort": "10001"}]},
        },
    }
    state = state_from_attrs(attrs, "0.0.0.0", upstream)
    assert state.endpoint is not None
    assert (state.endpoint.host, state.endpoint.port) == endpoint
    assert state.name == "sandman-alice" and state.running


def test_setenv_lines() -> None:
    text = sshd_session_config({"SANDMAN_GPU_UUID": "MIG-1", "NVIDIA_VISIBLE_DEVICES": "MIG-1"})
    assert text == "SetEnv NVIDIA_VISIBLE_DEVICES=MIG-1 SANDMAN_GPU_UUID=MIG-1\n"
    for bad in ({"A": "has space"}, {"A": 'quote"'}, {"lower": "x"}, {"A": "new\nline"}):
        with pytest.raises(ValueError):
            sshd_session_config(bad)


def test_gpu_reaches_the_container() -> None:
    simulated = _kwargs(_session())
    assert simulated["environment"]["NVIDIA_VISIBLE_DEVICES"] == "MIG-1234"
    assert simulated["environment"]["SANDMAN_GPU_UUID"] == "MIG-1234"
    assert "device_requests" not in simulated
    real = _kwargs(_session(real_gpus=True))
    (request,) = real["device_requests"]
    assert request["Driver"] == "nvidia" and request["DeviceIDs"] == ["MIG-1234"]
    none = session_environment(_session(gpu_uuids=(), mig_profile=None))
    assert none["NVIDIA_VISIBLE_DEVICES"] == "void" and "SANDMAN_MIG_PROFILE" not in none


def test_sizes() -> None:
    assert parse_size("2g") == 2 * 1024**3
    assert parse_size("512m") == 512 * 1024**2
    assert parse_size("1.5G") == int(1.5 * 1024**3)
    assert parse_size("1024") == 1024
