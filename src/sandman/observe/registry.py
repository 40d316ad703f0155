"""``/metrics``: the text Prometheus scrapes, put together from what is known.

Two parts, both written by prometheus-client's text writer from registries of
our own (never the library's module-wide one):

- what the latest snapshot says (GPUs, sessions, seed names): rendered once per
  snapshot, on the collector's thread as soon as it is published, and reused by
  every scrape until the next one; at 64 GPUs that is most of the text;
- what changes between snapshots (service counters, the gateway's numbers,
  sources added later such as costs): rendered at each scrape, and small.

So a scrape costs a few small families and a concatenation, and never waits on
NVML, the engine or the database.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from sandman.gateway.counters import GatewayState
from sandman.observe.exposition import snapshot_families
from sandman.observe.samples import MetricsSnapshot
from sandman.observe.service_metrics import ServiceMetrics, gateway_families

__all__ = ["CONTENT_TYPE", "MetricsRegistry", "Source"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Source = Callable[[], Iterable[Metric]]


class _Families(Collector):
    """A collector over a function: what ``families()`` returns at collection time."""

    def __init__(self, families: Callable[[], Iterable[Metric]]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families()


def _registry(families: Callable[[], Iterable[Metric]]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return registry


class MetricsRegistry:
    """Renders ``/metrics``. ``sources`` take further families (a cost per team and
    project, ``gpu_hourly_cost{team, project}``, once costs are kept)."""

    def __init__(self, service: ServiceMetrics, hostname: str) -> None:
        self.service = service
        self.hostname = hostname
        self.sources: list[Source] = []
        self._lock = threading.Lock()
        self._rendered: tuple[MetricsSnapshot | None, bytes] = (None, b"")
        self._pending: MetricsSnapshot | None = None
        self._gateway: GatewayState | None = None
        self._live = _registry(self._live_families)

    def prepare(self, snapshot: MetricsSnapshot) -> bytes:
        """Render ``snapshot``'s families (once; later calls reuse the text)."""
        with self._lock:
            done, text = self._rendered
            if done is snapshot:
                return text
        text = generate_latest(_registry(lambda: snapshot_families(snapshot, self.hostname)))
        with self._lock:
            current, _ = self._rendered
            if current is None or current.at <= snapshot.at:
                self._rendered = (snapshot, text)
        return text

    def _live_families(self) -> Iterator[Metric]:
        yield from self.service.families()
        if self._gateway is not None:
            yield from gateway_families(self._gateway)
        for source in self.sources:
            yield from source()

    def render(self, snapshot: MetricsSnapshot | None, gateway: GatewayState | None) -> bytes:
        """The whole text: ``snapshot``'s part (rendered now if not yet) and the rest."""
        head = self.prepare(snapshot) if snapshot is not None else b""
        with self._lock:
            self._gateway = gateway
            tail = generate_latest(self._live)
        return head + tail
