"""Keep an SSHPiper ``pipe.yaml`` (yaml plugin format) in step with the sessions,
for sites that prefer SSHPiper as their gateway in front of Sandman's containers.

Every pipe routes a user name to its session's sshd, authenticates upstream with
a key made for that one session (a file of mode 0400, as SSHPiper requires;
only that session's sshd authorizes it, and it is deleted when the session
ends) and pins the container's host key, so no trust-on-first-use happens
anywhere and no single file opens every session.
"""

from __future__ import annotations

import base64
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml
from sqlalchemy import select

from sandman.domain import SessionStatus
from sandman.services.keys import generate_key_pair
from sandman.services.sessions import SessionService
from sandman.store.models import Session as SessionRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pipe:
    user_id: str
    authorized_keys: list[str]
    host: str
    port: int
    host_public_key: str
    private_key: Path  # this session's upstream key file


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def render_pipes(pipes: list[Pipe]) -> str:
    """The whole ``pipe.yaml`` (pure)."""
    document = {
        "version": "1.0",
        "pipes": [
            {
                "from": [
                    {
                        "username": pipe.user_id,
                        "authorized_keys_data": _b64(
                            "".join(k + "\n" for k in pipe.authorized_keys)
                        ),
                    }
                ],
                "to": {
                    "host": f"{pipe.host}:{pipe.port}",
                    "username": pipe.user_id,
                    "private_key": str(pipe.private_key),
                    "known_hosts_data": [
                        _b64(f"[{pipe.host}]:{pipe.port} {pipe.host_public_key}\n")
                    ],
                    "ignore_hostkey": False,
                },
            }
            for pipe in sorted(pipes, key=lambda p: p.user_id)
        ],
    }
    header = "# Written by Sandman; rewritten on every session change. Do not edit.\n"
    return header + yaml.safe_dump(document, sort_keys=False)


def write_atomically(path: Path, content: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SshPiperConfig:
    def __init__(self, path: Path, sessions: SessionService) -> None:
        self.path = path
        self.sessions = sessions
        self.keys_dir = path.parent / "keys"
        self._lock = threading.Lock()  # one writer
        self._state = threading.Lock()  # guards the two counters
        self._requested = 0  # changes asked for
        self._written = 0  # changes the file on disk covers

    def session_key(self, session_id: str) -> str:
        """Make the key SSHPiper logs in to this session with; returns its public line."""
        pair = generate_key_pair(f"sshpiper@{session_id}")
        write_atomically(self.keys_dir / session_id, pair.private_openssh, 0o400)
        return pair.public_openssh

    def forget(self, session_id: str) -> None:
        (self.keys_dir / session_id).unlink(missing_ok=True)

    def sync(self) -> None:
        """Rewrite ``pipe.yaml`` from a snapshot of the running sessions.

        One writer at a time, and each write reads its snapshot after the
        changes that asked for it: a caller whose change an earlier write
        already covered returns at once, so a burst of changes costs a few
        writes, and an older snapshot never overwrites a newer file.
        """
        with self._state:
            self._requested += 1
            wanted = self._requested
        with self._lock:
            if self._written >= wanted:
                return
            with self._state:
                covering = self._requested
            pipes = self._snapshot()
            write_atomically(self.path, render_pipes(pipes), 0o600)
            self._written = covering
        log.debug("sshpiper config: %d pipes", len(pipes))

    def _snapshot(self) -> list[Pipe]:
        with self.sessions.db.read() as db:
            rows = list(
                db.scalars(select(SessionRow).where(SessionRow.status == SessionStatus.RUNNING))
            )
        return [
            Pipe(
                user_id=row.user_id,
                authorized_keys=list(row.authorized_keys),
                host=row.endpoint_host,
                port=row.endpoint_port,
                host_public_key=row.host_public_key,
                private_key=self.keys_dir / row.id,
            )
            for row in rows
            if row.endpoint_host
            and row.endpoint_port
            and row.host_public_key
            and (self.keys_dir / row.id).exists()
        ]
