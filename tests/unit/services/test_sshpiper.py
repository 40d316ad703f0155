from __future__ import annotations

import base64
from pathlib import Path

import yaml

from sandman.services.sshpiper import Pipe, render_pipes


def test_pipe_yaml_pins_host_keys_and_uses_key_files() -> None:
    text = render_pipes(
        [
            Pipe("bob", ["ssh-ed25519 BBBB bob"], "127.0.0.1", 10001, "ssh-ed25519 HOSTB"),
            Pipe("alice", ["ssh-ed25519 AAAA a"], "127.0.0.1", 10000, "ssh-ed25519 HOSTA"),
        ],
        Path("/data/sshpiper/sandman-upstream-key"),
    )
    document = yaml.safe_load(text)
    assert document["version"] == "1.0"
    first = document["pipes"][0]
    assert first["from"][0]["username"] == "alice"
    assert base64.b64decode(first["from"][0]["authorized_keys_data"]) == b"ssh-ed25519 AAAA a\n"
    assert first["to"]["host"] == "127.0.0.1:10000" and first["to"]["username"] == "alice"
    assert first["to"]["private_key"] == "/data/sshpiper/sandman-upstream-key"
    assert first["to"]["ignore_hostkey"] is False
    (known,) = first["to"]["known_hosts_data"]
    assert base64.b64decode(known) == b"[127.0.0.1]:10000 ssh-ed25519 HOSTA\n"
    assert "BEGIN" not in text  # no private key material inline


def test_no_sessions_no_pipes() -> None:
    assert yaml.safe_load(render_pipes([], Path("/k")))["pipes"] == []
