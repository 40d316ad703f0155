"""One client connection to the gateway: authentication, routing and bookkeeping.

asyncssh calls this class's callbacks (it is an ``asyncssh.SSHServer``); the
channels it accepts are relayed by :mod:`sandman.gateway.relay`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncssh

from sandman.gateway.counters import GatewayCounters
from sandman.gateway.keys import parse_public_keys, same_key
from sandman.gateway.limits import StartupLimiter
from sandman.gateway.logcontext import ConnectionLog
from sandman.gateway.relay import (
    DownstreamSession,
    TCPEnd,
    TrafficStats,
    open_tcp_relay,
)
from sandman.gateway.routing import ConnectionRecord, Route, RouteSource
from sandman.gateway.upstream import UpstreamPolicy, connect_upstream

_log = logging.getLogger("sandman.gateway")


@dataclass
class GatewayContext:
    """What every connection shares with the gateway that accepted it."""

    route_source: RouteSource
    identity: asyncssh.SSHKey
    policy: UpstreamPolicy
    register: Callable[[GatewayConnection], None]
    unregister: Callable[[GatewayConnection], None]
    spawn: Callable[[Awaitable[None]], None]
    allow_passwords: bool = False
    startups: StartupLimiter = field(default_factory=StartupLimiter)
    counters: GatewayCounters = field(default_factory=GatewayCounters)


def no_session_message(user_id: str) -> str:
    return f"no running session for {user_id}"


def login_banner(route: Route, now: datetime) -> str:
    """What a user reads before their shell prompt."""
    left = route.expires_at - now
    minutes = max(0, int(left.total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    expires = route.expires_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Sandman session {route.session_id}\n"
        f"  GPU:     {route.gpu}\n"
        f"  Expires: {expires} (in {hours}h{minutes:02d}m)\n"
        f"{route.notice}"
    )


class GatewayConnection(asyncssh.SSHServer):
    """Server-side callbacks for one client connection."""

    def __init__(self, ctx: GatewayContext) -> None:
        self._ctx = ctx
        # Unique across restarts: it is the key of the audit record.
        self.conn_id = uuid.uuid4().hex[:16]
        self.log = ConnectionLog(_log, self.conn_id)
        self.stats = TrafficStats()
        self.user_id: str | None = None
        self.route: Route | None = None
        self._refusal: str | None = None
        self._authenticated = False
        self._conn: asyncssh.SSHServerConnection | None = None
        self._client_address = "unknown"
        self._client_host = "unknown"
        self._counted_as_startup = False
        self._started_at = datetime.now(UTC)
        self._keys: list[asyncssh.SSHKey] | None = None
        self._upstream_task: asyncio.Task[asyncssh.SSHClientConnection] | None = None
        self._channels: set[DownstreamSession] = set()
        self._closed = False
        # Set once the session lookup after authentication is done: asyncssh may hand
        # us channel requests before ``auth_completed`` has finished awaiting it.
        self._routed = asyncio.Event()

    # -- asyncssh callbacks -------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._client_host = str(peer[0])
            self._client_address = f"{peer[0]}:{peer[1]}"
        self.log.debug("connection from %s", self._client_address)
        refusal = self._ctx.startups.admit(self._client_host)
        if refusal is not None:
            # Dropped before even the version line, as OpenSSH's MaxStartups
            # does: the client reads "connection closed by remote host" (an
            # SSH disconnect message cannot reach it this early) and the
            # reason is in the gateway's log.
            self.log.warning("refused: %s", refusal)
            self._ctx.counters.refuse("startup_limit")
            conn.abort()
            return
        self._counted_as_startup = True

    def _end_startup(self) -> None:
        if self._counted_as_startup:
            self._counted_as_startup = False
            self._ctx.startups.release(self._client_host)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._end_startup()
        if self._upstream_task is not None:
            task = self._upstream_task
            if task.done():
                if not task.cancelled() and task.exception() is None:
                    task.result().close()
            else:
                task.cancel()
        if self._authenticated:
            self._ctx.unregister(self)
            self._ctx.spawn(self._record(ended=True))
        elif self.user_id is not None:
            self._refusal = "authentication failed"
            self._ctx.counters.refuse("authentication")
            self._ctx.spawn(self._record(ended=True))
        self.log.info(
            "closed (%s): %d bytes from client, %d to client",
            exc or "normally",
            self.stats.from_client,
            self.stats.to_client,
        )

    def begin_auth(self, username: str) -> bool:
        self.user_id = username
        self.log.user = username
        return True

    def password_auth_supported(self) -> bool:
        return self._ctx.allow_passwords

    async def validate_password(self, username: str, password: str) -> bool:
        self.user_id = username
        return await asyncio.to_thread(self._ctx.route_source.check_password, username, password)

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if self._keys is None or self.user_id != username:
            self.user_id = username
            lines = await asyncio.to_thread(self._ctx.route_source.authorized_keys, username)
            self._keys = parse_public_keys(lines)
        return any(same_key(key, k) for k in self._keys)

    async def auth_completed(self) -> None:
        assert self.user_id is not None
        self._authenticated = True
        self._end_startup()
        try:
            self.route = await asyncio.to_thread(self._ctx.route_source.route, self.user_id)
        except Exception:
            self.log.exception("session lookup failed")
            self._refusal = "sandman: cannot look up your session now; try again shortly"
        finally:
            self._routed.set()
        if self._refusal is not None:
            self.log.info("refused: %s", self._refusal)
            self._ctx.counters.refuse("lookup_failed")
        elif self.route is None:
            self._refusal = no_session_message(self.user_id)
            self.log.info("refused: %s", self._refusal)
            self._ctx.counters.refuse("no_session")
        else:
            self.log.session = self.route.session_id
            self.log.info("accepted from %s", self._client_address)
        self._ctx.register(self)
        await self._record(ended=False)
        if self.route is not None:
            await asyncio.to_thread(self._ctx.route_source.touch, self.route.session_id)

    def session_requested(self) -> DownstreamSession:
        return DownstreamSession(self)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Awaitable[TCPEnd]:
        return open_tcp_relay(self, dest_host, dest_port, orig_host, orig_port)

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        self.log.info("refused remote forwarding of %s:%d", listen_host, listen_port)
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        self.log.info("refused unix socket forwarding to %s", dest_path)
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        return False

    # -- RelayContext -------------------------------------------------------

    async def ready(self) -> None:
        await self._routed.wait()

    @property
    def refusal(self) -> str | None:
        return self._refusal

    def login_banner(self) -> str:
        return "" if self.route is None else login_banner(self.route, datetime.now(UTC))

    async def upstream(self) -> asyncssh.SSHClientConnection:
        """The upstream connection, opened once and shared by all channels.

        It opens on first use rather than at login so that an agent forwarding
        request (which precedes ``exec``) can be honoured upstream.
        """
        task = self._upstream_task
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            assert self.route is not None
            agent_path = self._conn.get_agent_path() if self._conn is not None else None
            task = asyncio.get_running_loop().create_task(
                connect_upstream(
                    self.route,
                    self._ctx.identity,
                    agent_forward_path=agent_path,
                    policy=self._ctx.policy,
                    log=self.log,
                )
            )
            self._upstream_task = task
        conn = await asyncio.shield(task)
        if self._closed:
            conn.close()
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "connection closed")
        return conn

    def channel_opened(self, session: DownstreamSession) -> None:
        self._channels.add(session)

    def channel_closed(self, session: DownstreamSession) -> None:
        self._channels.discard(session)

    # -- used by the gateway --------------------------------------------------

    @property
    def is_open(self) -> bool:
        return not self._closed

    def cut(self, reason: str) -> None:
        """Close the connection now, telling any open session channel why."""
        self.log.info("closing: %s", reason)
        for session in list(self._channels):
            session.fail(f"sandman: connection closed: {reason}", 255)
        if self._conn is not None:
            # Let the message and the exit status reach the client before the
            # disconnect overtakes them.
            conn = self._conn
            if self._channels:
                asyncio.get_running_loop().call_later(0.5, conn.close)
            else:
                conn.close()

    async def _record(self, *, ended: bool) -> None:
        record = ConnectionRecord(
            connection_id=self.conn_id,
            user_id=self.user_id or "",
            session_id=self.route.session_id if self.route is not None else None,
            client_address=self._client_address,
            started_at=self._started_at,
            ended_at=datetime.now(UTC) if ended else None,
            bytes_from_client=self.stats.from_client,
            bytes_to_client=self.stats.to_client,
            result="refused" if self._refusal is not None else "accepted",
            reason=self._refusal,
        )
        try:
            await asyncio.to_thread(self._ctx.route_source.record_connection, record)
        except Exception:
            self.log.exception("could not record the connection")
