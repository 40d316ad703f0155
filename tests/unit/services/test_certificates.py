"""The user CA: certificates for one principal until a time; rotation keeps old
sessions reachable until no session can need the old CA."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh

from sandman.services.certificates import UserCA


def test_certificates_name_one_user_and_end_with_the_session(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    ca = UserCA(tmp_path / "ca", timedelta(days=7), clock=lambda: now[0])
    assert (tmp_path / "ca" / "user_ca_ed25519").stat().st_mode & 0o777 == 0o600
    gateway = asyncssh.generate_private_key("ssh-ed25519")
    until = datetime.fromtimestamp(now[0], UTC) + timedelta(hours=1)
    (line,) = ca.certificates(gateway, "alice", until, key_id="s1")
    certificate = asyncssh.import_certificate(line)
    assert certificate.principals == ["alice"]
    assert certificate._valid_before == int(until.timestamp())  # no public accessor
    assert certificate.signing_key.public_data == ca.current.public_data

    old = ca.trusted_keys()
    new = ca.rotate()
    assert ca.trusted_keys() == [new] != old
    # both CAs sign while a session started before the rotation may still run
    lines = ca.certificates(gateway, "alice", until, key_id="s1")
    signers = [asyncssh.import_certificate(c).signing_key.public_data for c in lines]
    assert len(signers) == 2 and signers[0] == ca.current.public_data
    now[0] += timedelta(days=8).total_seconds()  # longer than any session can live
    later = datetime.fromtimestamp(now[0], UTC) + timedelta(hours=1)
    assert len(ca.certificates(gateway, "alice", later, key_id="s1")) == 1


def test_a_rotation_by_another_process_is_seen(tmp_path: Path) -> None:
    serving = UserCA(tmp_path / "ca", timedelta(days=7))
    before = serving.trusted_keys()
    UserCA(tmp_path / "ca", timedelta(days=7)).rotate()  # `sandman ca rotate`
    assert serving.trusted_keys() != before
