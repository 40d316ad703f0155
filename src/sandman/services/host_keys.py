"""Each user's container host key: generated once and kept, so known_hosts never breaks."""

from __future__ import annotations

import os
from pathlib import Path

from sandman.domain import validate_user_id
from sandman.fsutil import write_private
from sandman.services.container_spec import HOST_KEY
from sandman.services.keys import generate_key_pair


class HostKeys:
    """``<data_dir>/users/<user_id>/ssh_host_ed25519_key[.pub]``, readable by Sandman only."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()

    def pair(self, user_id: str) -> tuple[str, str]:
        """(private, public) in OpenSSH form."""
        directory = self.data_dir / "users" / validate_user_id(user_id)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        private_path, public_path = directory / HOST_KEY, directory / f"{HOST_KEY}.pub"
        if not (private_path.exists() and public_path.exists()):
            pair = generate_key_pair(f"sandman-{user_id}")
            write_private(private_path, pair.private_openssh, 0o600, os.getuid(), os.getgid())
            write_private(public_path, pair.public_openssh + "\n", 0o644, os.getuid(), os.getgid())
        return private_path.read_text(), public_path.read_text().strip()
