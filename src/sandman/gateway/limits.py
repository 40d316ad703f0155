"""Caps on connections that have not authenticated yet.

Every connection costs the gateway a key exchange before anyone is known, so
a single source opening connections in a loop could keep the event loop busy
with handshakes and starve everyone else. Like OpenSSH's ``MaxStartups``, the
gateway holds at most ``per_address`` unauthenticated connections from one
client address and ``total`` overall; a connection past either cap is
refused at once, with the reason. Authenticated connections do not count, and
neither does a connection once it has gone. The caps are generous by default
because a whole lab often reaches the gateway from one NAT address.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

DEFAULT_PER_ADDRESS = 128
DEFAULT_TOTAL = 512


@dataclass
class StartupLimiter:
    """Counts unauthenticated connections per client address."""

    per_address: int = DEFAULT_PER_ADDRESS
    total: int = DEFAULT_TOTAL
    _by_address: Counter[str] = field(default_factory=Counter)

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address``; the refusal when it is over a cap."""
        if self._by_address[address] >= self.per_address:
            return (
                f"too many unauthenticated connections from {address} "
                f"(at most {self.per_address}); try again shortly"
            )
        if sum(self._by_address.values()) >= self.total:
            return f"too many unauthenticated connections (at most {self.total}); try again shortly"
        self._by_address[address] += 1
        return None

    def release(self, address: str) -> None:
        """The connection authenticated or went away: it no longer counts."""
        left = self._by_address[address] - 1
        if left > 0:
            self._by_address[address] = left
        else:
            del self._by_address[address]

    def pending(self, address: str | None = None) -> int:
        """Unauthenticated connections now, from ``address`` or in all."""
        if address is not None:
            return self._by_address[address]
        return sum(self._by_address.values())
