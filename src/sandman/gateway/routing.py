"""How the gateway learns where a user goes.

The gateway only maps (user, key) to an upstream, as SSHPiper does; where the
mapping comes from (Sandman's database, a static table in tests) is a plugin
behind ``RouteSource``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class Route:
    """The running session a user's connection is relayed to."""

    session_id: str
    user_id: str
    host: str  # upstream sshd address (127.0.0.1 with a published port, or the container's IP)
    port: int
    host_public_key: str  # OpenSSH line of the container's host key; checked strictly
    gpu: str  # human description for the banner, e.g. "MIG 1g.5gb on NVIDIA A100-SXM4-40GB"
    expires_at: datetime
    # Login name on the upstream sshd; None means the same as ``user_id`` (the
    # session container runs as the user).
    upstream_user: str | None = None
    # OpenSSH user certificates of the gateway's key for this user, from Sandman's CA;
    # none means the session authorizes the gateway's key itself.
    certificates: tuple[str, ...] = ()
    # More banner lines (idle reclaim: the timeout, a warning standing), each ending "\n".
    notice: str = ""


@dataclass(frozen=True)
class ConnectionRecord:
    """One SSH connection as it ends up in the audit log."""

    connection_id: str
    user_id: str
    session_id: str | None
    client_address: str
    started_at: datetime
    ended_at: datetime | None
    bytes_from_client: int
    bytes_to_client: int
    result: str  # "accepted" | "refused"
    reason: str | None = None


class RouteSource(Protocol):
    """Sandman's view of users and sessions, as the gateway needs it.

    Methods are synchronous (they read a database); the gateway calls them in a
    worker thread.
    """

    def authorized_keys(self, user_id: str) -> list[str]:
        """OpenSSH public key lines the user may log in with (empty if unknown)."""
        ...

    def route(self, user_id: str) -> Route | None:
        """The user's running session, or None."""
        ...

    def record_connection(self, record: ConnectionRecord) -> None:
        """Store a connection's start (ended_at None) or its end (same id)."""
        ...

    def check_password(self, user_id: str, password: str) -> bool:
        """Whether ``password`` matches the user's hashed secret (only when enabled)."""
        ...

    def touch(self, session_id: str) -> None:
        """Move the session's ``last_activity`` to now."""
        ...
