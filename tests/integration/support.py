"""Helpers shared by the integration tests (the real OpenSSH client)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any


def write_key(directory: Path, private_key: str, name: str = "id") -> Path:
    path = directory / name
    path.write_text(private_key)
    os.chmod(path, 0o600)
    return path


def ssh(
    session: dict[str, Any],
    key: Path,
    command: str,
    known_hosts: Path | None = None,
    user: str | None = None,
    extra: tuple[str, ...] = (),
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """The real OpenSSH client, host key checked strictly against the API's answer."""
    if known_hosts is None:
        known_hosts = key.with_suffix(".known_hosts")
        known_hosts.write_text(
            f"[127.0.0.1]:{session['ssh_port']} {session['ssh_host_public_key']}\n"
        )
    return subprocess.run(
        [
            "ssh", "-p", str(session["ssh_port"]), "-i", str(key),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "ConnectTimeout=20", *extra,
            f"{user or session['user_id']}@127.0.0.1", command,
        ],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
