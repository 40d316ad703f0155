from __future__ import annotations

import asyncssh
import pytest

from sandman.errors import InvalidRequest
from sandman.services.keys import generate_key_pair, normalize_public_keys


def test_generated_pair_matches() -> None:
    pair = generate_key_pair("alice@sandman")
    private = asyncssh.import_private_key(pair.private_openssh)
    public = private.export_public_key("openssh").decode().split()[:2]
    assert pair.public_openssh.split()[:2] == public
    assert pair.public_openssh.endswith(" alice@sandman")


def test_keys_are_normalized_and_deduplicated() -> None:
    key = generate_key_pair("k").public_openssh
    assert normalize_public_keys([f"  {key}  ", key]) == [key]


@pytest.mark.parametrize(
    "bad",
    ["", "not a key", "ssh-ed25519 AAAA", "ssh-ed25519 AAAA\nssh-rsa BBBB", "-----BEGIN"],
)
def test_junk_is_refused(bad: str) -> None:
    with pytest.raises(InvalidRequest, match=r"ssh_public_keys\[0\]"):
        normalize_public_keys([bad])


def test_too_many_keys() -> None:
    key = generate_key_pair("k").public_openssh
    with pytest.raises(InvalidRequest, match="at most"):
        normalize_public_keys([key] * 33)
