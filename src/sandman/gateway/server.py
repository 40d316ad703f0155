"""The SSH gateway: ``ssh user123@gateway`` lands in user123's session container.

The gateway authenticates the user against their registered keys, looks up
their running session through a :class:`~sandman.gateway.routing.RouteSource`
and relays every channel to the session's own sshd, which it reaches with its
identity key and whose host key it checks strictly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable, Sequence
from pathlib import Path

import asyncssh

from sandman.config import GATEWAY_CIPHERS
from sandman.gateway import asyncssh_tuning
from sandman.gateway.connection import GatewayConnection, GatewayContext
from sandman.gateway.counters import GatewayCounters, GatewayState
from sandman.gateway.keys import load_or_create_key, public_key_line
from sandman.gateway.limits import StartupLimiter
from sandman.gateway.routing import RouteSource
from sandman.gateway.upstream import UpstreamPolicy

log = logging.getLogger("sandman.gateway")

TOUCH_INTERVAL_S = 30.0


def moved_sessions(
    connections: Iterable[GatewayConnection], seen: dict[str, int]
) -> tuple[set[str], dict[str, int]]:
    """The sessions whose connections moved channel data since ``seen`` (connection id
    to its activity bytes then), and the new ``seen``. Only channel data counts, and
    of it not what goes to a terminal: a session's own output (a log scrolling, a
    warning Sandman writes) does not keep it, input does."""
    moved: set[str] = set()
    now: dict[str, int] = {}
    for conn in connections:
        if conn.route is None:
            continue
        now[conn.conn_id] = conn.stats.activity
        if now[conn.conn_id] != seen.get(conn.conn_id, 0):
            moved.add(conn.route.session_id)
    return moved, now


class GatewayServer:
    """Accepts users' SSH connections and relays them into their sessions.

    Host key and identity key are created on first start (Ed25519, mode 0600)
    and reused afterwards, so users' ``known_hosts`` entries stay valid.
    """

    def __init__(
        self,
        route_source: RouteSource,
        *,
        listen_host: str,
        listen_port: int,
        host_key_path: Path,
        identity_key_path: Path,
        public_host: str = "ssh.gw",
        allow_passwords: bool = False,
        upstream_policy: UpstreamPolicy | None = None,
        touch_interval_s: float = TOUCH_INTERVAL_S,
        sweep_interval_s: float = 3.0,
        tune_asyncssh: bool = True,
        ciphers: Sequence[str] = GATEWAY_CIPHERS,
        startups: StartupLimiter | None = None,
    ) -> None:
        self.startups = startups or StartupLimiter()
        self.counters = GatewayCounters()
        self._ciphers = list(ciphers)
        self._allow_passwords = allow_passwords
        self._route_source = route_source
        self._listen_host = listen_host
        self._listen_port = listen_port
        self._host_key_path = host_key_path
        self._identity_key_path = identity_key_path
        self.public_host = public_host
        self._policy = upstream_policy or UpstreamPolicy()
        self._touch_interval_s = touch_interval_s
        self._tune = tune_asyncssh
        self._host_key: asyncssh.SSHKey | None = None
        self._identity: asyncssh.SSHKey | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._connections: dict[str, set[GatewayConnection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._toucher: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._sweep_interval_s = sweep_interval_s

    # -- keys -------------------------------------------------------------

    def _keys(self) -> tuple[asyncssh.SSHKey, asyncssh.SSHKey]:
        if self._host_key is None:
            self._host_key = load_or_create_key(
                self._host_key_path, comment=f"sandman-gateway-host@{self.public_host}"
            )
        if self._identity is None:
            self._identity = load_or_create_key(
                self._identity_key_path, comment=f"sandman-gateway@{self.public_host}"
            )
        return self._host_key, self._identity

    def identity_public_key(self) -> str:
        """The OpenSSH line session containers must authorize for the gateway."""
        return public_key_line(self._keys()[1])

    def host_public_key(self) -> str:
        """The OpenSSH line of the gateway's host key (for users' known_hosts)."""
        return public_key_line(self._keys()[0])

    def known_hosts_line(self) -> str:
        """A ready-made known_hosts entry for ``public_host``."""
        return f"{self.public_host} {self.host_public_key()}"

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Bind the listening socket and start accepting connections."""
        if self._tune:
            asyncssh_tuning.apply()
        host_key, identity = self._keys()
        ctx = GatewayContext(
            route_source=self._route_source,
            identity=identity,
            policy=self._policy,
            register=self._register,
            unregister=self._unregister,
            spawn=self._spawn,
            allow_passwords=self._allow_passwords,
            startups=self.startups,
            counters=self.counters,
        )
        self._acceptor = await asyncssh.listen(
            self._listen_host,
            self._listen_port,
            server_factory=lambda: GatewayConnection(ctx),
            server_host_keys=[host_key],
            encryption_algs=self._ciphers,
            public_key_auth=True,
            password_auth=self._allow_passwords,
            kbdint_auth=False,
            allow_pty=True,
            line_editor=False,
            encoding=None,
            agent_forwarding=True,
            x11_forwarding=False,
            keepalive_interval=30,
            keepalive_count_max=3,
            login_timeout=60,
            config=None,
        )
        self._toucher = asyncio.get_running_loop().create_task(self._touch_loop())
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())
        log.info("gateway listening on %s:%d", self._listen_host, self.bound_port)

    @property
    def listening(self) -> bool:
        return self._acceptor is not None

    @property
    def bound_port(self) -> int:
        """The TCP port actually bound (useful with ``listen_port=0``)."""
        if self._acceptor is None:
            raise RuntimeError("gateway not started")
        return self._acceptor.get_port()

    async def close(self) -> None:
        """Stop listening, close every connection and flush the audit records."""
        if self._acceptor is not None:
            self._acceptor.close()
        for conns in list(self._connections.values()):
            for conn in list(conns):
                conn.cut("the gateway is shutting down")
        if self._acceptor is not None:
            await self._acceptor.wait_closed()
            self._acceptor = None
        for task in (self._toucher, self._sweeper):
            if task is not None:
                task.cancel()
        self._toucher = self._sweeper = None
        # Connection-lost callbacks schedule the final records; let them land.
        deadline = asyncio.get_running_loop().time() + 5.0
        while self._connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close_user(self, user_id: str, reason: str) -> int:
        """Close every open connection of ``user_id``; return how many there were.

        Sandman calls this when the user's session is deleted or expires. Each
        open session channel is told the reason on stderr first.
        """
        conns = [c for c in self._connections.get(user_id, set()) if c.is_open]
        for conn in conns:
            conn.cut(reason)
        if conns:
            log.info("closed %d connection(s) of %s: %s", len(conns), user_id, reason)
        return len(conns)

    async def close_ended(self) -> int:
        """Close connections whose session is no longer the user's running one.

        ``close_user`` is the fast path when the session ends in this process; this
        sweep (run every few seconds) also catches sessions ended elsewhere, e.g. by
        an API process beside a standalone ``sandman gateway``.
        """
        closed = 0
        for user_id, conns in list(self._connections.items()):
            held = [c for c in conns if c.is_open and c.route is not None]
            if not held:
                continue
            route = await asyncio.to_thread(self._route_source.route, user_id)
            current = route.session_id if route is not None else None
            for conn in held:
                assert conn.route is not None
                if conn.route.session_id != current:
                    conn.cut(f"session {conn.route.session_id} has ended")
                    closed += 1
        return closed

    def state(self) -> GatewayState:
        """Its numbers for ``/metrics``; call on the gateway's event loop."""
        open_ = [c for conns in self._connections.values() for c in conns]
        return GatewayState(
            open_connections=len(open_),
            pending_connections=self.startups.pending(),
            refused=dict(self.counters.refused),
            bytes_from_client=self.counters.closed_bytes_from_client
            + sum(c.stats.from_client for c in open_),
            bytes_to_client=self.counters.closed_bytes_to_client
            + sum(c.stats.to_client for c in open_),
        )

    def connection_count(self, user_id: str | None = None) -> int:
        """How many authenticated connections are open (for one user, or all)."""
        if user_id is not None:
            return len(self._connections.get(user_id, ()))
        return sum(len(c) for c in self._connections.values())

    # -- internals ------------------------------------------------------------

    def _register(self, conn: GatewayConnection) -> None:
        assert conn.user_id is not None
        self._connections.setdefault(conn.user_id, set()).add(conn)

    def _unregister(self, conn: GatewayConnection) -> None:
        assert conn.user_id is not None
        conns = self._connections.get(conn.user_id)
        if conns is not None and conn in conns:
            self.counters.closed(conn.stats.from_client, conn.stats.to_client)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._connections[conn.user_id]

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep_loop(self) -> None:
        """Cut connections of ended sessions, whoever ended them."""
        while True:
            await asyncio.sleep(self._sweep_interval_s)
            try:
                await self.close_ended()
            except Exception:
                log.exception("sweep of ended sessions failed")

    async def _touch_loop(self) -> None:
        """Move ``last_activity`` of every session whose connections moved channel data
        since the last round (not keep-alives, re-keying or terminal output: see
        ``moved_sessions``); an open connection where nothing moves leaves it idle."""
        seen: dict[str, int] = {}
        while True:
            await asyncio.sleep(self._touch_interval_s)
            open_ = [c for conns in self._connections.values() for c in conns if c.is_open]
            sessions, seen = moved_sessions(open_, seen)
            for session_id in sessions:
                try:
                    await asyncio.to_thread(self._route_source.touch, session_id)
                except Exception:
                    log.exception("[session=%s] touch failed", session_id)
