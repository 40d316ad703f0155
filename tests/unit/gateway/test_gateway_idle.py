"""What the gateway tells idle reclaim: which sessions' connections moved channel
data (not terminal output, keep-alives or re-keying), and the banner's idle lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sandman.gateway.connection import login_banner
from sandman.gateway.relay import DownstreamSession, TrafficStats, UpstreamSession, _End
from sandman.gateway.routing import Route
from sandman.gateway.server import moved_sessions

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def route(session_id: str, notice: str = "") -> Route:
    return Route(session_id, "u", "h", 1, "k", "gpu", NOW + timedelta(hours=1), notice=notice)


@dataclass
class Conn:
    """What ``moved_sessions`` reads of a connection."""

    conn_id: str
    route: Route | None
    stats: TrafficStats = field(default_factory=TrafficStats)


def test_only_connections_that_moved_data_touch_their_session() -> None:
    busy, silent, other = Conn("c1", route("s1")), Conn("c2", route("s2")), Conn("c3", None)
    moved, seen = moved_sessions([busy, silent, other], {})
    assert moved == set()  # nothing moved yet
    busy.stats.from_client += 10
    other.stats.from_client += 10  # not routed to a session
    moved, seen = moved_sessions([busy, silent, other], seen)
    assert moved == {"s1"}
    moved, seen = moved_sessions([busy, silent, other], seen)
    assert moved == set()  # the connection is open but nothing moves
    silent.stats.to_client += 5  # e.g. an sftp download: channel data to the client
    assert moved_sessions([busy, silent], seen)[0] == {"s2"}


def test_terminal_output_is_not_activity() -> None:
    """What a session prints (a log, Sandman's own warning) does not keep it; input does."""
    conn = Conn("c1", route("s1"))
    moved, seen = moved_sessions([conn], {})
    conn.stats.to_client += 500
    conn.stats.terminal_output += 500
    assert conn.stats.activity == 0
    moved, seen = moved_sessions([conn], seen)
    assert moved == set()
    conn.stats.from_client += 1  # a key pressed
    assert moved_sessions([conn], seen)[0] == {"s1"}


def test_the_relay_counts_output_to_a_pty_as_terminal_output() -> None:
    stats = TrafficStats()
    to_terminal = _End(stats, faces_client=False)
    to_terminal.to_terminal = True
    to_terminal._count(100)
    _End(stats, faces_client=False)._count(7)  # an exec or forwarded channel
    _End(stats, faces_client=True)._count(3)
    assert (stats.from_client, stats.to_client, stats.terminal_output) == (3, 107, 100)
    assert stats.activity == 10


def test_a_channel_with_a_pty_relays_to_a_terminal() -> None:
    @dataclass
    class Ctx:
        stats: TrafficStats

    shell = DownstreamSession(Ctx(TrafficStats()))  # type: ignore[arg-type]
    assert not UpstreamSession(shell).to_terminal  # exec, sftp: no pty
    shell.pty_requested("xterm", (80, 24, 0, 0), {})
    assert UpstreamSession(shell).to_terminal


def test_the_banner_carries_idle_lines() -> None:
    assert login_banner(route("s1"), NOW).endswith("(in 1h00m)\n")
    idle = "  Idle:    reclaimed after 60 min without activity (sandman-keepalive keeps it)\n"
    assert login_banner(route("s1", idle), NOW).endswith("(in 1h00m)\n" + idle)
