"""Key files and upstream host-key pinning."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest

from sandman.gateway.keys import load_or_create_key, parse_public_keys, public_key_line, same_key
from sandman.gateway.routing import Route
from sandman.gateway.server import GatewayServer
from sandman.gateway.upstream import known_hosts_for


def route(host_key: str) -> Route:
    return Route(
        session_id="s1",
        user_id="u1",
        host="127.0.0.1",
        port=2222,
        host_public_key=host_key,
        gpu="MIG 1g.10gb",
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )


def test_key_is_created_private_and_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "host_key"
    first = load_or_create_key(path, comment="c")
    assert path.stat().st_mode & 0o777 == 0o600
    second = load_or_create_key(path, comment="c")
    assert public_key_line(first) == public_key_line(second)
    assert public_key_line(first).startswith("ssh-ed25519 ")


def test_loose_key_file_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "k"
    load_or_create_key(path, comment="c")
    path.chmod(0o644)
    load_or_create_key(path, comment="c")
    assert path.stat().st_mode & 0o777 == 0o600


def test_gateway_keys_stable_across_instances(tmp_path: Path) -> None:
    def make() -> GatewayServer:
        return GatewayServer(
            object(),  # type: ignore[arg-type]
            listen_host="127.0.0.1",
            listen_port=0,
            host_key_path=tmp_path / "h",
            identity_key_path=tmp_path / "i",
        )

    a, b = make(), make()
    assert a.identity_public_key() == b.identity_public_key()
    assert a.host_public_key() == b.host_public_key()
    assert a.identity_public_key() != a.host_public_key()
    assert a.known_hosts_line().startswith("ssh.gw ssh-ed25519 ")


def test_parse_public_keys_skips_garbage(caplog: pytest.LogCaptureFixture) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    line = public_key_line(key)
    with caplog.at_level(logging.WARNING):
        keys = parse_public_keys(["", "# comment", "ssh-ed25519 not-base64!", line + " laptop"])
    assert len(keys) == 1 and same_key(keys[0], key)
    assert "malformed" in caplog.text


def test_known_hosts_trusts_only_the_route_key() -> None:
    good = asyncssh.generate_private_key("ssh-ed25519")
    other = asyncssh.generate_private_key("ssh-ed25519")
    kh = known_hosts_for(route(public_key_line(good)))
    trusted = kh.match("127.0.0.1", "127.0.0.1", 2222)[0]
    assert [k.public_data for k in trusted] == [good.public_data]
    assert other.public_data not in [k.public_data for k in trusted]


def test_upstream_with_wrong_host_key_is_refused_without_retry() -> None:
    """A real asyncssh server presenting another key: one attempt, then UpstreamError."""
    from sandman.gateway.upstream import UpstreamError, UpstreamPolicy, connect_upstream

    async def scenario() -> tuple[str, int]:
        served = asyncssh.generate_private_key("ssh-ed25519")
        pinned = asyncssh.generate_private_key("ssh-ed25519")
        attempts = 0

        class Counting(asyncssh.SSHServer):
            def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
                nonlocal attempts
                attempts += 1

        acceptor = await asyncssh.listen(
            "127.0.0.1", 0, server_host_keys=[served], server_factory=Counting
        )
        r = Route(**{**route(public_key_line(pinned)).__dict__, "port": acceptor.get_port()})
        try:
            await connect_upstream(
                r,
                asyncssh.generate_private_key("ssh-ed25519"),
                agent_forward_path=None,
                policy=UpstreamPolicy(attempts=3, first_backoff_s=0.01),
                log=logging.LoggerAdapter(logging.getLogger("t")),
            )
        except UpstreamError as exc:
            return str(exc), attempts
        finally:
            acceptor.close()
        return "connected", attempts

    message, attempts = asyncio.run(scenario())
    assert "host key does not match" in message
    assert attempts == 1


def test_upstream_refused_port_is_retried() -> None:
    from sandman.gateway.upstream import UpstreamError, UpstreamPolicy, connect_upstream

    async def scenario() -> str:
        key = asyncssh.generate_private_key("ssh-ed25519")
        r = Route(**{**route(public_key_line(key)).__dict__, "port": 1})
        try:
            await connect_upstream(
                r,
                key,
                agent_forward_path=None,
                policy=UpstreamPolicy(attempts=3, first_backoff_s=0.01),
                log=logging.LoggerAdapter(logging.getLogger("t")),
            )
        except UpstreamError as exc:
            return str(exc)
        return "connected"

    assert "did not answer" in asyncio.run(scenario())
