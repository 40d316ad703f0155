"""What the gateway counts for ``/metrics``: refusals by reason and relayed bytes.

Plain integers bumped on the event loop, read at scrape time; no metrics library
in the data path. Bytes of open connections live in each connection's
``TrafficStats``; when a connection ends they move here, so open plus closed is
a total that only grows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["REFUSALS", "GatewayCounters", "GatewayState"]

# Why a connection was refused: a handful of words, never the text shown to the
# user (which names them) so that the metric's label stays small.
REFUSALS = ("startup_limit", "authentication", "no_session", "lookup_failed")


@dataclass
class GatewayCounters:
    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REFUSALS, 0))
    closed_bytes_from_client: int = 0
    closed_bytes_to_client: int = 0

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def closed(self, from_client: int, to_client: int) -> None:
        self.closed_bytes_from_client += from_client
        self.closed_bytes_to_client += to_client


@dataclass(frozen=True)
class GatewayState:
    """The gateway's numbers at one moment, copied on the event loop."""

    open_connections: int  # authenticated and open
    pending_connections: int  # not authenticated yet
    refused: dict[str, int]
    bytes_from_client: int
    bytes_to_client: int
