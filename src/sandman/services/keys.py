"""SSH keys: generated pairs, and validation of the keys admins hand us."""

from __future__ import annotations

from dataclasses import dataclass

import asyncssh
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandman.errors import InvalidRequest

MAX_KEYS = 32


@dataclass(frozen=True)
class KeyPair:
    private_openssh: str  # a secret: returned once, never stored or logged
    public_openssh: str


def generate_key_pair(comment: str) -> KeyPair:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return KeyPair(private_openssh=private, public_openssh=f"{public} {comment}")


def normalize_public_keys(keys: list[str]) -> list[str]:
    """Each key parsed by asyncssh and re-exported as one clean line; junk is 400."""
    if len(keys) > MAX_KEYS:
        raise InvalidRequest(f"at most {MAX_KEYS} ssh_public_keys are accepted")
    normalized: list[str] = []
    for index, raw in enumerate(keys):
        line = raw.strip() if isinstance(raw, str) else ""
        if not line or "\n" in line or "\r" in line:
            raise InvalidRequest(f"ssh_public_keys[{index}] must be one OpenSSH public key line")
        try:
            key = asyncssh.import_public_key(line)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise InvalidRequest(
                f"ssh_public_keys[{index}] is not an OpenSSH public key ({exc})"
            ) from None
        exported = key.export_public_key("openssh").decode().strip()
        if exported not in normalized:
            normalized.append(exported)
    return normalized
