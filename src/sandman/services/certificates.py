"""Sandman's SSH user certificate authority: no key opens every session.

Session containers trust the CA (``TrustedUserCAKeys``) instead of a gateway
key. The gateway logs in to a session with its own key and a certificate the CA
signs for that one user (the principal), valid until the session expires; a
stolen gateway key alone opens nothing, and a certificate opens one user's
session for as long as it lasts.

``rotate`` makes a new CA and keeps the old one as retired for the longest a
session can live (``max_ttl``): the gateway presents a certificate from every
CA still in use, so sessions started before the rotation (which trust the old
CA) stay reachable, and new sessions trust only the new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import asyncssh

from sandman.gateway.keys import load_or_create_key, public_key_line

CURRENT = "user_ca_ed25519"
RETIRED_DIR = "retired"
CLOCK_SKEW = timedelta(minutes=1)  # certificates start a minute early, for skewed clocks


@dataclass(frozen=True)
class RetiredCA:
    key: asyncssh.SSHKey
    retired_at: float  # epoch seconds


class UserCA:
    def __init__(
        self, directory: Path, max_ttl: timedelta, clock: Callable[[], float] = time.time
    ) -> None:
        self.directory = directory
        self.max_ttl = max_ttl
        self.clock = clock
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._key = load_or_create_key(directory / CURRENT, comment="sandman-user-ca")
        self._stamp = self._file_stamp()
        self._retired_cache: tuple[int, list[RetiredCA]] | None = None  # (dir mtime, keys)

    def _file_stamp(self) -> tuple[int, int]:
        stat = (self.directory / CURRENT).stat()
        return stat.st_ino, stat.st_mtime_ns

    @property
    def current(self) -> asyncssh.SSHKey:
        """The current CA key, re-read when another process (``sandman ca rotate``)
        has replaced it."""
        try:
            stamp = self._file_stamp()
        except FileNotFoundError:  # a rotation is between its two steps
            return self._key
        if stamp != self._stamp:
            self._key = load_or_create_key(self.directory / CURRENT, comment="sandman-user-ca")
            self._stamp = stamp
        return self._key

    def _retired(self) -> list[RetiredCA]:
        """Retired CAs whose certificates may still be needed, newest first. The keys are
        read again only when a rotation has changed the directory: the gateway asks for
        certificates on every route lookup."""
        retired = self.directory / RETIRED_DIR
        try:
            stamp = retired.stat().st_mtime_ns
        except FileNotFoundError:
            return []
        if self._retired_cache is None or self._retired_cache[0] != stamp:
            keys = [
                RetiredCA(asyncssh.read_private_key(path), float(path.stem))
                for path in sorted(retired.glob("*.key"), reverse=True)
            ]
            self._retired_cache = (stamp, keys)
        horizon = self.max_ttl.total_seconds()
        return [r for r in self._retired_cache[1] if self.clock() - r.retired_at <= horizon]

    def trusted_keys(self) -> list[str]:
        """The CA public key a new session trusts (OpenSSH lines)."""
        return [public_key_line(self.current)]

    def certificates(
        self, user_key: asyncssh.SSHKey, principal: str, valid_before: datetime, key_id: str
    ) -> list[str]:
        """Certificates for ``user_key`` as ``principal`` until ``valid_before``: one from
        the current CA, then one from each retired CA still in use (OpenSSH lines)."""
        valid_after = datetime.fromtimestamp(self.clock()).astimezone() - CLOCK_SKEW
        lines = []
        for ca in [self.current, *(r.key for r in self._retired())]:
            certificate = ca.generate_user_certificate(
                user_key,
                key_id,
                principals=[principal],
                valid_after=valid_after,
                valid_before=valid_before,
                permit_x11_forwarding=False,
                permit_user_rc=False,
            )
            lines.append(certificate.export_certificate().decode().strip())
        return lines

    def rotate(self) -> str:
        """Retire the current CA and make a new one; returns the new public key line."""
        retired = self.directory / RETIRED_DIR
        retired.mkdir(exist_ok=True, mode=0o700)
        (self.directory / CURRENT).rename(retired / f"{self.clock():.0f}.key")
        self._key = load_or_create_key(self.directory / CURRENT, comment="sandman-user-ca")
        self._stamp = self._file_stamp()
        for path in retired.glob("*.key"):  # forget what no session can need any more
            if self.clock() - float(path.stem) > self.max_ttl.total_seconds():
                path.unlink()
        return public_key_line(self.current)
