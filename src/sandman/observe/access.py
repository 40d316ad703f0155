"""Who may read ``/metrics`` (pure).

The text names users, teams and sessions, so it is not public. A scraper on this
host (Prometheus beside Sandman, a client on loopback) needs nothing; any other
needs ``Authorization: Bearer <SANDMAN_METRICS_TOKEN>``, compared in constant
time. Without a configured token, only loopback is served. Behind a reverse
proxy on the same host every client looks like loopback, so a request that a
proxy forwarded (it carries ``Forwarded``, ``X-Forwarded-For`` or ``X-Real-IP``)
is never taken for a local one: it needs the token too.
"""

from __future__ import annotations

import hmac
import ipaddress

from sandman.errors import Forbidden, Unauthorized

__all__ = ["PROXY_HEADERS", "check_metrics_access", "is_loopback"]


def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1, and IPv4 loopback written as IPv6 (``::ffff:127.0.0.1``)."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def check_metrics_access(
    client_host: str | None, authorization: str, token: str | None, forwarded: bool = False
) -> None:
    """Return when the client may read ``/metrics``; else ``Unauthorized`` (no or a
    wrong token) or ``Forbidden`` (no token is configured for non-loopback clients).
    ``forwarded``: the request came through a proxy, whatever address it came from."""
    if is_loopback(client_host) and not forwarded:
        return
    if token is None:
        raise Forbidden(
            "/metrics answers clients on this host only; set SANDMAN_METRICS_TOKEN to let "
            "other scrapers in with that bearer token"
        )
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized("/metrics needs Authorization: Bearer <metrics token>")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized("wrong metrics token")
