"""Byte-exact relaying of SSH channels between a client and a session's sshd.

Every relayed channel is a pair of *ends*: one faces the user's client (an
asyncssh server-side session) and one faces the session's sshd (a client-side
session on the upstream connection). Data is passed as raw bytes; nothing is
decoded or re-implemented (SFTP, scp and rsync are just bytes here).

Flow control follows asyncio's protocol pattern: when an end's write buffer
passes its high-water mark, asyncssh calls ``pause_writing`` and the *other*
end stops reading, which stops SSH window adjustments and so pushes back on
the sender. Memory per channel therefore stays near one SSH window.

While both channels of a pair are open and nothing is held back, an end names
its peer's channel in ``splice_target``: the tuned data path
(:mod:`sandman.gateway.tuning.datapath`) then passes data packets straight
from one connection to the other and reports them with ``spliced``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import asyncssh
from asyncssh import EXTENDED_DATA_STDERR
from asyncssh.channel import SSHChannel

from sandman.gateway.upstream import UpstreamError

DataType = int | None
LogAdapter = logging.LoggerAdapter[logging.Logger]


@dataclass
class TrafficStats:
    """Payload bytes relayed for one client connection, summed over channels."""

    from_client: int = 0
    to_client: int = 0
    # Of ``to_client``, what went to a terminal (a channel with a pty): what a session
    # shows, not what someone does with it (idle reclaim counts the rest).
    terminal_output: int = 0

    @property
    def activity(self) -> int:
        """Channel data that shows the session in use: all but terminal output."""
        return self.from_client + self.to_client - self.terminal_output


class RelayContext(Protocol):
    """What a relayed channel needs from the connection it belongs to."""

    @property
    def log(self) -> LogAdapter:
        """Logger carrying the connection's context."""
        ...

    @property
    def stats(self) -> TrafficStats:
        """Byte counters of the connection."""
        ...

    async def ready(self) -> None:
        """Wait until the user's session has been looked up after authentication."""
        ...

    @property
    def refusal(self) -> str | None:
        """Why this connection may not reach a session (None when it may)."""
        ...

    def login_banner(self) -> str:
        """Text shown before an interactive shell."""
        ...

    async def upstream(self) -> asyncssh.SSHClientConnection:
        """The connection to the session's sshd (opened on first use)."""
        ...

    def channel_opened(self, session: DownstreamSession) -> None:
        """Track a session channel so that it can be told why it is cut."""
        ...

    def channel_closed(self, session: DownstreamSession) -> None:
        """Forget a session channel."""
        ...


class _End:
    """Half of a relayed channel: what it reads goes to ``peer``'s channel."""

    def __init__(self, stats: TrafficStats, *, faces_client: bool) -> None:
        self.chan: SSHChannel[bytes] | None = None
        self.peer: _End | None = None
        self._stats = stats
        self._faces_client = faces_client
        self._pending: list[tuple[bytes, DataType]] = []
        self._pending_eof = False
        self._write_paused = False
        self._peer_gone = False
        self.splice_target: SSHChannel[bytes] | None = None
        self.to_terminal = False  # relays a session's output to the user's pty

    def _count(self, n: int) -> None:
        if self._faces_client:
            self._stats.from_client += n
        else:
            self._stats.to_client += n
            if self.to_terminal:
                self._stats.terminal_output += n

    # ``n`` bytes went straight to ``splice_target`` (see the module doc)
    spliced = _count

    def _update_splice(self) -> None:
        peer = self.peer
        self.splice_target = peer.chan if peer is not None and not self._pending else None

    def _end_splice(self) -> None:
        """This end's channel is gone: nothing may be spliced to or from it."""
        self.splice_target = None
        if self.peer is not None:
            self.peer.splice_target = None

    # -- called by asyncssh on this end's channel -------------------------

    def _on_data(self, data: bytes, datatype: DataType) -> None:
        self._count(len(data))
        peer = self.peer
        if peer is not None and peer.chan is not None and not self._pending:
            peer._write(data, datatype)
        else:
            # The other side is not open yet: hold this (at most one packet
            # before asyncssh stops delivering) and let the window push back.
            self._pending.append((data, datatype))
            self.splice_target = None
            if self.chan is not None:
                self.chan.pause_reading()

    def _on_eof(self) -> bool:
        peer = self.peer
        if peer is not None and peer.chan is not None and not self._pending:
            peer._write_eof()
        else:
            self._pending_eof = True
        return True  # keep our sending side open: the peer decides when to close

    def _on_pause_writing(self) -> None:
        self._write_paused = True
        if self.peer is not None and self.peer.chan is not None:
            self.peer.chan.pause_reading()

    def _on_resume_writing(self) -> None:
        self._write_paused = False
        if self.peer is not None and self.peer.chan is not None and not self.peer._pending:
            self.peer.chan.resume_reading()

    # -- used by the peer ---------------------------------------------------

    def _write(self, data: bytes, datatype: DataType) -> None:
        chan = self.chan
        if chan is None or chan.is_closing():
            return
        chan.write(data, datatype if self._faces_client else None)

    def _write_eof(self) -> None:
        chan = self.chan
        if chan is not None and not chan.is_closing():
            chan.write_eof()

    def flush_to_peer(self) -> None:
        """Hand over what was held while the peer was not open, then read on."""
        peer = self.peer
        if peer is None or peer.chan is None:
            return
        pending, self._pending = self._pending, []
        for data, datatype in pending:
            peer._write(data, datatype)
        self._update_splice()
        if self._pending_eof:
            self._pending_eof = False
            peer._write_eof()
        if self.chan is not None and not peer._write_paused:
            self.chan.resume_reading()


def link(a: _End, b: _End) -> None:
    """Make two ends peers and release anything either held meanwhile."""
    a.peer, b.peer = b, a
    a.flush_to_peer()
    b.flush_to_peer()


class DownstreamSession(_End, asyncssh.SSHServerSession[bytes]):
    """A client's session channel (shell, exec or subsystem), relayed upstream.

    asyncssh acknowledges the exec/shell/subsystem request before the upstream
    has accepted it, so a failure upstream can only be reported in band: a
    message on stderr and exit status 1.
    """

    def __init__(self, ctx: RelayContext) -> None:
        super().__init__(ctx.stats, faces_client=True)
        self._ctx = ctx
        self._term_type: str | None = None
        self._term_size: tuple[int, int, int, int] = (0, 0, 0, 0)
        self._term_modes: dict[int, int] = {}
        self._command: str | None = None
        self._subsystem: str | None = None
        self._upstream: UpstreamSession | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def server_chan(self) -> asyncssh.SSHServerChannel[bytes]:
        assert isinstance(self.chan, asyncssh.SSHServerChannel)
        return self.chan

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan
        self._ctx.channel_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_splice()
        self._ctx.channel_closed(self)
        if self._task is not None and not self._task.done():
            self._task.cancel()
        up = self._upstream
        if up is not None and up.chan is not None:
            up.chan.close()
        self.chan = None

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any
    ) -> bool:
        self._term_type = term_type
        self._term_size = term_size
        self._term_modes = dict(term_modes)
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self._term_size = (width, height, pixwidth, pixheight)
        up = self._upstream
        if up is not None and isinstance(up.chan, asyncssh.SSHClientChannel):
            up.chan.change_terminal_size(width, height, pixwidth, pixheight)

    @property
    def has_terminal(self) -> bool:
        return self._term_type is not None

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self._command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        self._subsystem = subsystem
        return True

    def session_started(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._start())

    def signal_received(self, signal: str) -> None:
        up = self._upstream
        if up is not None and isinstance(up.chan, asyncssh.SSHClientChannel):
            up.chan.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        up = self._upstream
        if up is not None and isinstance(up.chan, asyncssh.SSHClientChannel):
            up.chan.send_break(msec)
            return True
        return False

    def data_received(self, data: bytes, datatype: DataType) -> None:
        self._on_data(data, datatype)

    def eof_received(self) -> bool:
        return self._on_eof()

    def pause_writing(self) -> None:
        self._on_pause_writing()

    def resume_writing(self) -> None:
        self._on_resume_writing()

    # -- relaying --------------------------------------------------------

    def notify(self, message: str) -> None:
        """Write a line for the user on stderr (CRLF when a terminal is attached)."""
        chan = self.chan
        if chan is None or chan.is_closing():
            return
        eol = "\r\n" if self._term_type is not None else "\n"
        text = message.replace("\n", eol) + eol
        chan.write(text.encode("utf-8"), EXTENDED_DATA_STDERR)

    def fail(self, message: str, status: int = 1) -> None:
        """Tell the user why and end the channel with a non-zero status."""
        self.notify(message)
        if self.chan is not None:
            self.server_chan.exit(status)  # a no-op once the channel is closing

    async def _start(self) -> None:
        ctx = self._ctx
        await ctx.ready()
        refusal = ctx.refusal
        if refusal is not None:
            self.fail(refusal)
            return
        is_shell = self._command is None and self._subsystem is None
        if is_shell:
            self._write(ctx.login_banner().replace("\n", "\r\n").encode("utf-8"), None)
        try:
            conn = await ctx.upstream()
            env: dict[bytes | str, bytes | str] = {
                k: v for k, v in self.server_chan.get_environment_bytes().items()
            }
            _, session = await conn.create_session(
                lambda: UpstreamSession(self),
                self._command,
                subsystem=self._subsystem,
                env=env,
                request_pty=self._term_type is not None,
                term_type=self._term_type,
                term_size=self._term_size,
                term_modes=self._term_modes,
                encoding=None,
            )
        except UpstreamError as exc:
            self.fail(f"sandman: cannot reach your session: {exc}")
            return
        except (asyncssh.Error, OSError) as exc:
            ctx.log.warning("upstream session request failed: %s", exc)
            self.fail(f"sandman: your session refused the request: {exc}")
            return
        assert isinstance(session, UpstreamSession)
        self._upstream = session
        if self.chan is None:  # the client went away meanwhile
            if session.chan is not None:
                session.chan.close()
            return
        link(self, session)

    def upstream_finished(
        self, status: int | None, signal: tuple[str, bool, str, str] | None
    ) -> None:
        """The upstream channel closed: pass on how the remote process ended."""
        chan = self.chan
        if chan is None:
            return  # the client is gone already
        if signal is not None:
            name, core_dumped, msg, lang = signal
            self.server_chan.exit_with_signal(name, core_dumped, msg, lang)
        elif status is not None:
            self.server_chan.exit(status)
        else:
            chan.close()


class UpstreamSession(_End, asyncssh.SSHClientSession[bytes]):
    """The session's side of a relayed session channel."""

    def __init__(self, downstream: DownstreamSession) -> None:
        super().__init__(downstream._stats, faces_client=False)
        self.peer = downstream
        self._downstream = downstream
        self.to_terminal = downstream.has_terminal
        self._status: int | None = None
        self._signal: tuple[str, bool, str, str] | None = None

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self.chan = chan

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_splice()
        self.chan = None
        self._downstream.upstream_finished(self._status, self._signal)

    def exit_status_received(self, status: int) -> None:
        self._status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self._signal = (signal, core_dumped, msg, lang)

    def data_received(self, data: bytes, datatype: DataType) -> None:
        self._on_data(data, datatype)

    def eof_received(self) -> bool:
        return self._on_eof()

    def pause_writing(self) -> None:
        self._on_pause_writing()

    def resume_writing(self) -> None:
        self._on_resume_writing()


class TCPEnd(_End, asyncssh.SSHTCPSession[bytes]):
    """One side of a forwarded TCP connection (``ssh -L``, VS Code tunnels)."""

    def __init__(self, stats: TrafficStats, *, faces_client: bool) -> None:
        super().__init__(stats, faces_client=faces_client)
        self._close_when_open = False

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.chan = chan
        if self.peer is not None:
            self.peer.flush_to_peer()
            self._update_splice()
        if self._close_when_open:
            chan.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_splice()
        self.chan = None
        peer = self.peer
        if isinstance(peer, TCPEnd):
            peer.peer_closed()

    def peer_closed(self) -> None:
        if self.chan is None:
            self._close_when_open = True
        else:
            # close() also when only our sending side is done (EOF written):
            # is_closing() is already true then, but the channel is still open.
            self.chan.close()

    def data_received(self, data: bytes, datatype: DataType) -> None:
        self._on_data(data, datatype)

    def eof_received(self) -> bool:
        return self._on_eof()

    def pause_writing(self) -> None:
        self._on_pause_writing()

    def resume_writing(self) -> None:
        self._on_resume_writing()


async def open_tcp_relay(
    ctx: RelayContext, dest_host: str, dest_port: int, orig_host: str, orig_port: int
) -> TCPEnd:
    """Open ``dest_host:dest_port`` from inside the session; return the client's end.

    Raises ``ChannelOpenError`` so the client sees why (``ssh -L`` prints it).
    """
    await ctx.ready()
    refusal = ctx.refusal
    if refusal is not None:
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, refusal)
    try:
        conn = await ctx.upstream()
    except UpstreamError as exc:
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_CONNECT_FAILED, f"cannot reach your session: {exc}"
        ) from exc
    down = TCPEnd(ctx.stats, faces_client=True)
    try:
        _, up = await conn.create_connection(
            lambda: TCPEnd(ctx.stats, faces_client=False),
            dest_host,
            dest_port,
            orig_host,
            orig_port,
        )
    except asyncssh.ChannelOpenError:
        raise
    except (asyncssh.Error, OSError) as exc:
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, str(exc)) from exc
    assert isinstance(up, TCPEnd)
    down.peer = up
    up.peer = down  # data from upstream is held until the client's channel opens
    ctx.log.debug("forwarding to %s:%d inside the session", dest_host, dest_port)
    return down
