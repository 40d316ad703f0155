"""The gateway's two long-lived keys.

The *host key* is what users' ``known_hosts`` pins, and the *identity key* is
what session containers authorize; both are generated once (Ed25519) and then
reused, so restarting the gateway never changes either.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import asyncssh

log = logging.getLogger(__name__)

KEY_ALGORITHM = "ssh-ed25519"


def load_or_create_key(path: Path, *, comment: str) -> asyncssh.SSHKey:
    """Read the private key at ``path``, generating it (mode 0600) if absent.

    The file is created with ``O_EXCL`` so that two processes starting at once
    cannot overwrite each other's key; the loser reads the winner's.
    """
    if path.exists():
        _warn_if_loose(path)
        return asyncssh.read_private_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key(KEY_ALGORITHM, comment=comment)
    data = key.export_private_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return asyncssh.read_private_key(path)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    log.info("generated %s key %s", KEY_ALGORITHM, path)
    return key


def public_key_line(key: asyncssh.SSHKey) -> str:
    """The OpenSSH ``authorized_keys`` / ``known_hosts`` form of a key."""
    return key.export_public_key("openssh").decode("ascii").strip()


def parse_public_keys(lines: list[str]) -> list[asyncssh.SSHKey]:
    """Parse OpenSSH public key lines, skipping (and logging) malformed ones."""
    keys: list[asyncssh.SSHKey] = []
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            keys.append(asyncssh.import_public_key(text))
        except (asyncssh.KeyImportError, ValueError):
            log.warning("ignoring malformed public key line %r", text[:40])
    return keys


def same_key(a: asyncssh.SSHKey, b: asyncssh.SSHKey) -> bool:
    """Whether two keys are the same public key (comments ignored)."""
    return a.public_data == b.public_data


def _warn_if_loose(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("key file %s has mode %o; tightening to 600", path, mode)
        path.chmod(0o600)
