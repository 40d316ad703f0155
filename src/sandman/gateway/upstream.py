"""Connecting the gateway to a session's own sshd.

The upstream is authenticated in both directions: the gateway logs in with its
identity key and a short-lived certificate for that one user (when the route
carries one), and the upstream must present exactly ``route.host_public_key``
(no trust on first use, no ``~/.ssh`` files, no agent).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

import asyncssh

from sandman.gateway.routing import Route

PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)


class UpstreamError(Exception):
    """The session's sshd could not be reached; ``str()`` is shown to the user."""


@dataclass(frozen=True)
class UpstreamPolicy:
    """How hard to try reaching a session's sshd."""

    attempts: int = 5
    first_backoff_s: float = 0.1
    connect_timeout_s: float = 10.0
    keepalive_interval_s: float = 30.0
    keepalive_count_max: int = 3


def known_hosts_for(route: Route) -> asyncssh.SSHKnownHosts:
    """A known_hosts list trusting only the route's host key, for any address."""
    return asyncssh.import_known_hosts(f"* {route.host_public_key.strip()}\n")


async def connect_upstream(
    route: Route,
    identity: asyncssh.SSHKey,
    *,
    agent_forward_path: str | None,
    policy: UpstreamPolicy,
    log: logging.LoggerAdapter[logging.Logger],
) -> asyncssh.SSHClientConnection:
    """Open the upstream connection, retrying refused or dropped attempts.

    A container that just started, or an sshd throttling a burst of logins
    (``MaxStartups``), refuses or drops connections for a moment; a wrong host
    key or a refused identity will not fix itself, so those fail at once.
    """
    user = route.upstream_user or route.user_id
    known_hosts = known_hosts_for(route)
    client_keys: list[asyncssh.SSHKey] | list[tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]]
    if route.certificates:
        client_keys = [(identity, asyncssh.import_certificate(line)) for line in route.certificates]
    else:
        client_keys = [identity]
    backoff = policy.first_backoff_s
    last: Exception | None = None
    for attempt in range(1, policy.attempts + 1):
        try:
            return await asyncssh.connect(
                route.host,
                route.port,
                username=user,
                client_keys=client_keys,
                known_hosts=known_hosts,
                agent_path=None,
                agent_forwarding=agent_forward_path or False,
                config=None,
                preferred_auth="publickey",
                password=None,
                encryption_algs=list(PREFERRED_CIPHERS),
                connect_timeout=policy.connect_timeout_s,
                keepalive_interval=policy.keepalive_interval_s,
                keepalive_count_max=policy.keepalive_count_max,
                x509_trusted_certs=None,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            log.error("upstream %s:%d host key mismatch: %s", route.host, route.port, exc)
            raise UpstreamError("the session's host key does not match; refusing") from exc
        except asyncssh.PermissionDenied as exc:
            log.error("upstream %s:%d refused the gateway identity", route.host, route.port)
            raise UpstreamError("the session refused the gateway's key") from exc
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            last = exc
            log.warning(
                "upstream %s:%d attempt %d/%d failed: %s",
                route.host,
                route.port,
                attempt,
                policy.attempts,
                exc,
            )
        if attempt < policy.attempts:
            await asyncio.sleep(backoff * (1 + random.random()))
            backoff *= 2
    raise UpstreamError(f"the session's sshd did not answer ({last})")
