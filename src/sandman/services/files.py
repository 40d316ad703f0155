"""Host files a session needs: the user's workspace and the session's SSH material.

Layout under the data directory::

    users/<user_id>/ssh_host_ed25519_key[.pub]   stable per user (known_hosts never breaks)
    sessions/<session_id>/ssh/                    mounted read-only at /etc/sandman/ssh
    sessions/<session_id>/passwd, group           mounted read-only at /etc/passwd, /etc/group

Workspaces are never deleted here: ending a session removes only ``sessions/<id>``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from sandman.domain import validate_user_id
from sandman.image.accounts import passwd_and_group
from sandman.services.keys import generate_key_pair

log = logging.getLogger(__name__)

HOST_KEY = "ssh_host_ed25519_key"


@dataclass(frozen=True)
class SessionPaths:
    ssh_dir: Path
    passwd: Path
    group: Path
    workspace: Path


def _write(path: Path, content: str, mode: int, uid: int, gid: int) -> None:
    """Write atomically with the mode set before the content lands."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, content.encode())
        os.fchmod(fd, mode)
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def sshd_session_config(environment: dict[str, str]) -> str:
    """``SetEnv`` lines so that ``ssh host cmd`` sees the session's GPU, as a login does."""
    for name, value in environment.items():
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name) or re.search(r"[\s\"'\\]", value):
            raise ValueError(f"environment entry {name}={value!r} cannot go into SetEnv")
    pairs = " ".join(f"{name}={value}" for name, value in sorted(environment.items()))
    return f"SetEnv {pairs}\n" if pairs else ""


class SessionFiles:
    def __init__(self, data_dir: Path, workspace_root: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.workspace_root = workspace_root.resolve()

    def workspace(self, user_id: str) -> Path:
        return self.workspace_root / validate_user_id(user_id)

    def existing_workspace_owner(self, user_id: str) -> int | None:
        """The uid owning a workspace left from an earlier install, to keep files readable."""
        path = self.workspace(user_id)
        return path.stat().st_uid if path.is_dir() else None

    def ensure_workspace(self, user_id: str, uid: int, gid: int) -> Path:
        path = self.workspace(user_id)
        self.workspace_root.mkdir(parents=True, exist_ok=True, mode=0o755)
        try:
            path.mkdir(mode=0o750)
        except FileExistsError:
            if path.is_symlink() or not path.is_dir():
                raise RuntimeError(f"{path} exists and is not a directory") from None
            if path.stat().st_uid != uid:
                log.warning(
                    "workspace %s is owned by uid %s, not %s", path, path.stat().st_uid, uid
                )
            return path
        os.chown(path, uid, gid)
        return path

    def host_key(self, user_id: str) -> tuple[str, str]:
        """The user's container host key pair, generated once and kept."""
        directory = self.data_dir / "users" / validate_user_id(user_id)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        private_path, public_path = directory / HOST_KEY, directory / f"{HOST_KEY}.pub"
        if not (private_path.exists() and public_path.exists()):
            pair = generate_key_pair(f"sandman-{user_id}")
            _write(private_path, pair.private_openssh, 0o600, os.getuid(), os.getgid())
            _write(public_path, pair.public_openssh + "\n", 0o644, os.getuid(), os.getgid())
        return private_path.read_text(), public_path.read_text().strip()

    def session_dir(self, session_id: str) -> Path:
        return self.data_dir / "sessions" / session_id

    def write_session(
        self,
        session_id: str,
        user_id: str,
        uid: int,
        gid: int,
        authorized_keys: list[str],
        environment: dict[str, str],
    ) -> tuple[SessionPaths, str]:
        """Write the session's SSH material; returns the paths and the host public key."""
        host_private, host_public = self.host_key(user_id)
        root = self.session_dir(session_id)
        ssh_dir = root / "ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        os.chmod(root, 0o755)
        _write(ssh_dir / HOST_KEY, host_private, 0o600, uid, gid)
        _write(ssh_dir / f"{HOST_KEY}.pub", host_public + "\n", 0o644, uid, gid)
        _write(
            ssh_dir / "authorized_keys", "".join(k + "\n" for k in authorized_keys), 0o644, uid, gid
        )
        _write(ssh_dir / "sshd_session.conf", sshd_session_config(environment), 0o644, uid, gid)
        passwd, group = passwd_and_group(user_id, uid, gid)
        _write(root / "passwd", passwd, 0o644, 0, 0)
        _write(root / "group", group, 0o644, 0, 0)
        paths = SessionPaths(
            ssh_dir=ssh_dir,
            passwd=root / "passwd",
            group=root / "group",
            workspace=self.ensure_workspace(user_id, uid, gid),
        )
        return paths, host_public

    def remove_session(self, session_id: str) -> None:
        shutil.rmtree(self.session_dir(session_id), ignore_errors=True)
