"""Fixtures: one upstream sshd and one gateway per module, users with keys."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gateway_harness import (
    Client,
    Env,
    GatewayThread,
    MemoryRouteSource,
    Sshd,
    have_openssh_server,
    keygen,
    make_route,
)

from sandman.gateway.upstream import UpstreamPolicy

pytestmark = pytest.mark.skipif(not have_openssh_server(), reason="OpenSSH sshd not installed")

USERS = ("alice", "bob", "carol")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if not have_openssh_server():
        pytest.skip("OpenSSH sshd not installed")
    root = tmp_path_factory.mktemp("gw")
    source = MemoryRouteSource()
    gateway = GatewayThread(
        source,
        root,
        touch_interval_s=1.0,
        upstream_policy=UpstreamPolicy(attempts=6, first_backoff_s=0.05),
    )
    keys: dict[str, Path] = {}
    sshd = Sshd(root / "upstream", [gateway.server.identity_public_key()])
    try:
        for user in (*USERS, "dave", "mallory", "eve"):
            keys[user] = root / f"id_{user}"
            source.keys[user] = [keygen(keys[user], user)]
        for user in USERS:
            source.routes[user] = make_route(user, sshd)
        # mallory's session presents a host key the gateway was not told about
        wrong = keygen(root / "other_host_key", "other")
        source.routes["mallory"] = make_route("mallory", sshd, host_public_key=wrong)
        del source.keys["eve"]  # eve has a key file but is unknown to Sandman
        gateway.start()
        client = Client(root, gateway.port, gateway.server.host_public_key())
        direct = Client(root, sshd.port, sshd.host_public_key)
        yield Env(root, source, sshd, gateway, client, direct, keys)
    finally:
        try:
            gateway.stop()
        finally:
            sshd.stop()


@pytest.fixture
def upstream_log(env: Env, request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the upstream sshd's log when a test fails."""
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(env.sshd.log_text()[-4000:])
