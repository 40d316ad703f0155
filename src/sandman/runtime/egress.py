"""Where sessions may open connections beyond their host (``SANDMAN_EGRESS``).

Runtime-neutral: the Docker runtime turns it into firewall rules; a Kubernetes
runtime would turn it into a NetworkPolicy. The host itself, link-local
addresses and other sessions are sealed whatever this says.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Egress:
    """``allow`` (the outside world: pip, git), ``deny`` (nothing but DNS), or
    ``networks`` (only these, e.g. a site's package mirror)."""

    mode: Literal["allow", "deny", "networks"]
    networks: tuple[Network, ...] = ()

    def __str__(self) -> str:
        if self.mode == "networks":
            return ",".join(str(n) for n in self.networks)
        return self.mode


def parse_egress(text: str) -> Egress:
    """``allow``, ``deny``, or a comma-separated list of networks (``10.20.0.0/16``, or
    an address for just that host); anything else is refused with the reason."""
    word = text.strip().lower()
    if word == "allow":
        return Egress("allow")
    if word == "deny":
        return Egress("deny")
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError("egress must be allow, deny, or a comma-separated list of networks")
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            raise ValueError(
                f"egress: {item!r} is not a network ({exc}); use allow, deny, or networks "
                "such as 10.20.0.0/16,192.0.2.10"
            ) from None
    return Egress("networks", tuple(networks))
