"""No master key: containers trust Sandman's CA, and the gateway logs in to a
session with a certificate for that one user that expires with the session."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from tests.integration.conftest import Harness
from tests.integration.support import ssh, write_key

from sandman.gateway.keys import load_or_create_key


def _container_file(harness: Harness, user: str, path: str) -> str:
    (container,) = [c for c in harness.containers() if c.labels["sandman.user_id"] == user]
    result = container.exec_run(["cat", path], user=container.attrs["Config"]["User"])
    assert result.exit_code == 0, result.output
    return str(result.output.decode())


def _login(session: dict[str, Any], harness: Harness, certificate: asyncssh.SSHCertificate) -> str:
    """Log in to the container's sshd directly with the gateway's key and ``certificate``."""
    identity = load_or_create_key(
        harness.data_dir / "gateway" / "identity_ed25519", comment="sandman-gateway"
    )
    known = asyncssh.import_known_hosts(f"* {session['container_host_public_key']}\n")
    row = harness.core.sessions.get(session["session_id"])

    async def run() -> str:
        async with asyncssh.connect(
            row.endpoint_host, row.endpoint_port, username=session["user_id"],
            client_keys=[(identity, certificate)], known_hosts=known, agent_path=None,
            config=None, preferred_auth="publickey",
        ) as conn:  # fmt: skip
            result = await conn.run("id -un", check=True)
            return str(result.stdout).strip()

    return asyncio.run(run())


def _certificate(harness: Harness, principal: str, valid_before: datetime) -> Any:
    ca = harness.core.ca
    assert ca is not None
    identity = load_or_create_key(
        harness.data_dir / "gateway" / "identity_ed25519", comment="sandman-gateway"
    )
    valid_after = datetime.now(UTC) - timedelta(hours=2)
    return ca.current.generate_user_certificate(
        identity, "test", principals=[principal], valid_after=valid_after, valid_before=valid_before
    )


def test_the_gateway_gets_in_with_a_certificate_and_nothing_else_does(
    harness: Harness, tmp_path: Path
) -> None:
    assert harness.core.sessions.gateway_key is not None
    ana = harness.create("ana").json()
    ben = harness.create("ben").json()
    # no long-lived key of the gateway in the container, the CA instead
    authorized = _container_file(harness, "ana", "/etc/sandman/ssh/authorized_keys")
    gateway_key = harness.core.sessions.gateway_key.split()[1]
    assert gateway_key not in authorized
    trusted = _container_file(harness, "ana", "/etc/sandman/ssh/trusted_user_ca_keys")
    assert trusted.split()[:2] == harness.core.ca.trusted_keys()[0].split()[:2]  # type: ignore[union-attr]
    # the user gets in through the gateway, which presents a certificate
    key = write_key(tmp_path, ana["ssh_private_key"])
    result = ssh(ana, key, "id -un")
    assert result.returncode == 0 and result.stdout.strip() == "ana", result.stderr
    # a valid certificate for ana opens ana's session
    soon = datetime.now(UTC) + timedelta(minutes=5)
    assert _login(ana, harness, _certificate(harness, "ana", soon)) == "ana"
    # an expired one does not, nor one for another user
    expired = _certificate(harness, "ana", datetime.now(UTC) - timedelta(minutes=5))
    with pytest.raises(asyncssh.PermissionDenied):
        _login(ana, harness, expired)
    with pytest.raises(asyncssh.PermissionDenied):
        _login(ben, harness, _certificate(harness, "ana", soon))
    # the certificates the gateway gets end with the session
    route = harness.core.routes.route("ana")
    assert route is not None and route.certificates
    certificate = asyncssh.import_certificate(route.certificates[0])
    assert certificate.principals == ["ana"]
    expires = datetime.fromisoformat(ana["expires_at"].replace("Z", "+00:00"))
    assert abs(certificate._valid_before - expires.timestamp()) < 2  # no public accessor


def test_rotation_keeps_running_sessions_reachable(harness: Harness, tmp_path: Path) -> None:
    before = harness.create("cai").json()
    ca = harness.core.ca
    assert ca is not None
    old = ca.trusted_keys()
    new = ca.rotate()
    assert new not in old
    after = harness.create("dee").json()
    trusted = _container_file(harness, "dee", "/etc/sandman/ssh/trusted_user_ca_keys")
    assert trusted.strip() == new  # new sessions trust only the new CA
    for session in (before, after):
        key = write_key(tmp_path, session["ssh_private_key"], session["user_id"])
        result = ssh(session, key, "id -un")
        assert result.stdout.strip() == session["user_id"], result.stderr
