"""The session, as a pure function of its row and grants: what the runtime launches."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sandman.environments.apps import SECRET_FILE as APPS_SECRET_FILE
from sandman.gpu.sharing import GpuShare
from sandman.image.accounts import passwd_and_group
from sandman.runtime.base import (
    DEPLOYMENT_LABEL,
    MANAGED_LABEL,
    SESSION_LABEL,
    USER_LABEL,
    GpuGrant,
    SessionFile,
    SessionLaunch,
    Workspace,
)

SSH_DIR = "/etc/sandman/ssh"
HOST_KEY = "ssh_host_ed25519_key"
SSHD_COMMAND = ("/usr/sbin/sshd", "-D", "-e", "-f", "/etc/sandman/sshd_config")


@dataclass(frozen=True)
class SessionContainer:
    """What the launch needs to know about one session."""

    session_id: str
    user_id: str
    uid: int
    gid: int
    image: str
    name: str
    deployment_id: str
    host_port: int | None  # the reserved host port, where the runtime publishes one
    cpus: float
    memory: str
    pids_limit: int
    shm_size: str
    gpu_uuids: tuple[str, ...]  # MIG or GPU UUIDs handed to the session
    mig_profile: str | None
    real_gpus: bool  # hand real devices to the session (nvml backend)
    authorized_keys: tuple[str, ...] = ()
    host_key: tuple[str, str] = ("", "")  # (private, public) OpenSSH
    trusted_ca_keys: tuple[str, ...] = ()  # user CAs whose certificates sshd accepts
    workspace_quota: int | None = None  # bytes a new workspace may hold; None: no limit
    gpu_share: GpuShare | None = None  # a replica of a shared GPU
    apps_secret: str | None = None  # the web apps' secret (environments.apps)
    gpu_model: str | None = None  # the catalogue's model of the granted GPU, where known


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
    environment.update(share_environment(session.gpu_share))
    return environment


def share_environment(share: GpuShare | None) -> dict[str, str]:
    """A shared GPU's fraction, and with MPS its limits as CUDA's client reads them.

    The session sees its one GPU as device 0. These variables only lower what the MPS
    control daemon allows (``gpu.mps`` sets the limits there, where a user cannot
    drop them); a time-sliced GPU has no limits to export."""
    if share is None:
        return {}
    environment = {
        "SANDMAN_GPU_SHARE": f"{share.share:.4g}",
        "SANDMAN_GPU_SHARING": share.mode,
    }
    if share.mode == "mps" and share.thread_percentage is not None:
        environment["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(share.thread_percentage)
        environment["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = f"0={share.memory_limit}"
    return environment


TRUSTED_CA_KEYS = f"{SSH_DIR}/trusted_user_ca_keys"


def sshd_session_config(environment: dict[str, str], trusted_ca: bool = False) -> str:
    """``SetEnv`` lines so that ``ssh host cmd`` sees the session's GPU, as a login does,
    and, with ``trusted_ca``, the CA whose user certificates sshd accepts (the image's
    sshd_config includes this file first, so its settings win)."""
    for name, value in environment.items():
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name) or re.search(r"[\s\"'\\]", value):
            raise ValueError(f"environment entry {name}={value!r} cannot go into SetEnv")
    pairs = " ".join(f"{name}={value}" for name, value in sorted(environment.items()))
    lines = f"SetEnv {pairs}\n" if pairs else ""
    if trusted_ca:
        lines += f"TrustedUserCAKeys {TRUSTED_CA_KEYS}\n"
    return lines


def session_files(session: SessionContainer) -> tuple[SessionFile, ...]:
    """sshd's host key, authorized keys and settings, and the account files."""
    private, public = session.host_key
    passwd, group = passwd_and_group(session.user_id, session.uid, session.gid)
    environment = session_environment(session)
    trusted = (
        (SessionFile(TRUSTED_CA_KEYS, "".join(k + "\n" for k in session.trusted_ca_keys)),)
        if session.trusted_ca_keys
        else ()
    )
    return (
        *trusted,
        SessionFile(f"{SSH_DIR}/{HOST_KEY}", private, 0o600, owned_by_user=True),
        SessionFile(f"{SSH_DIR}/{HOST_KEY}.pub", public + "\n", 0o644, owned_by_user=True),
        SessionFile(
            f"{SSH_DIR}/authorized_keys",
            "".join(k + "\n" for k in session.authorized_keys),
            0o644,
            owned_by_user=True,
        ),
        SessionFile(
            f"{SSH_DIR}/sshd_session.conf",
            sshd_session_config(environment, trusted_ca=bool(session.trusted_ca_keys)),
            0o644,
            owned_by_user=True,
        ),
        *(
            (SessionFile(APPS_SECRET_FILE, session.apps_secret, 0o600, owned_by_user=True),)
            if session.apps_secret
            else ()
        ),
        SessionFile("/etc/passwd", passwd, 0o644),
        SessionFile("/etc/group", group, 0o644),
    )


def session_launch(session: SessionContainer) -> SessionLaunch:
    return SessionLaunch(
        session_id=session.session_id,
        name=session.name,
        image=session.image,
        command=SSHD_COMMAND,
        hostname=session.user_id.replace("_", "-").strip("-") or "sandman",
        workspace=Workspace(
            session.user_id, session.uid, session.gid, quota_bytes=session.workspace_quota
        ),
        environment=session_environment(session),
        labels={
            MANAGED_LABEL: "true",
            SESSION_LABEL: session.session_id,
            USER_LABEL: session.user_id,
            DEPLOYMENT_LABEL: session.deployment_id,
        },
        files=session_files(session),
        gpu=GpuGrant(
            session.gpu_uuids, session.mig_profile, real=session.real_gpus, model=session.gpu_model
        ),
        cpus=session.cpus,
        memory=session.memory,
        pids_limit=session.pids_limit,
        shm_size=session.shm_size,
        host_port=session.host_port,
    )
