"""The session container, as a pure function of the session and its grants."""

from __future__ import annotations

from dataclasses import dataclass

from sandman.runtime.base import (
    DEPLOYMENT_LABEL,
    MANAGED_LABEL,
    SESSION_LABEL,
    USER_LABEL,
    ContainerSpec,
    Mount,
    PortBinding,
)
from sandman.services.files import SessionPaths

SSHD_PORT = 2222
SSHD_COMMAND = ("/usr/sbin/sshd", "-D", "-e", "-f", "/etc/sandman/sshd_config")


@dataclass(frozen=True)
class SessionContainer:
    """What the spec needs to know about one session."""

    session_id: str
    user_id: str
    uid: int
    gid: int
    image: str
    name: str
    network: str
    deployment_id: str
    ssh_bind_address: str
    ssh_port: int
    cpus: float
    memory: str
    pids_limit: int
    shm_size: str
    gpu_uuids: tuple[str, ...]  # MIG or GPU UUIDs handed to the container
    mig_profile: str | None
    real_gpus: bool  # pass a device request to the NVIDIA runtime (nvml backend)


def session_environment(session: SessionContainer) -> dict[str, str]:
    """What the container and every SSH login in it see (sshd gets it through SetEnv)."""
    visible = ",".join(session.gpu_uuids) if session.gpu_uuids else "void"
    environment = {
        "NVIDIA_VISIBLE_DEVICES": visible,
        "SANDMAN_GPU_UUID": ",".join(session.gpu_uuids),
        "SANDMAN_SESSION_ID": session.session_id,
        "SANDMAN_USER": session.user_id,
        "HOME": "/workspace",
        "USER": session.user_id,
    }
    if session.mig_profile:
        environment["SANDMAN_MIG_PROFILE"] = session.mig_profile
    return environment


def session_container_spec(session: SessionContainer, paths: SessionPaths) -> ContainerSpec:
    return ContainerSpec(
        name=session.name,
        image=session.image,
        command=SSHD_COMMAND,
        user=f"{session.uid}:{session.gid}",
        hostname=session.user_id.replace("_", "-").strip("-") or "sandman",
        network=session.network,
        environment=session_environment(session),
        labels={
            MANAGED_LABEL: "true",
            SESSION_LABEL: session.session_id,
            USER_LABEL: session.user_id,
            DEPLOYMENT_LABEL: session.deployment_id,
        },
        mounts=(
            Mount(str(paths.workspace), "/workspace", read_only=False),
            Mount(str(paths.ssh_dir), "/etc/sandman/ssh", read_only=True),
            Mount(str(paths.passwd), "/etc/passwd", read_only=True),
            Mount(str(paths.group), "/etc/group", read_only=True),
        ),
        ports=(PortBinding(SSHD_PORT, session.ssh_bind_address, session.ssh_port),),
        cpus=session.cpus,
        memory=session.memory,
        pids_limit=session.pids_limit,
        shm_size=session.shm_size,
        gpu_device_ids=session.gpu_uuids if session.real_gpus else (),
    )
