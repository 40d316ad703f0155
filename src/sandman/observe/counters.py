"""Counters and histograms with labels, kept in this process and rendered as
Prometheus families by a collector of our own.

prometheus-client's ``Counter`` and ``Histogram`` would do, but they register in
module-wide state unless handed a registry, and each adds a ``_created`` series
per label set; these add nothing and cost one lock and one dict update.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

__all__ = ["LabelledCounter", "LabelledHistogram"]


class LabelledCounter:
    """A counter per label set; ``name`` without ``_total`` (the writer adds it)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        initial: Sequence[Sequence[str]] = (),
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self._lock = threading.Lock()
        # Label sets known in advance start at zero, so rate() sees their first increase.
        self._values: dict[tuple[str, ...], float] = {tuple(v): 0.0 for v in initial}

    def inc(self, *values: str, amount: float = 1.0) -> None:
        key = tuple(values)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, *values: str) -> float:
        with self._lock:
            return self._values.get(tuple(values), 0.0)

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        with self._lock:
            items = sorted(self._values.items())
        for key, value in items:
            family.add_metric(list(key), value)
        return family


class LabelledHistogram:
    """A histogram per label set with fixed upper bounds (seconds, say)."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self.bounds = tuple(sorted(b for b in buckets if not math.isinf(b)))
        self._lock = threading.Lock()
        # label set -> (per-bucket counts with +Inf last, sum)
        self._values: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *values: str) -> None:
        key = tuple(values)
        slot = bisect_left(self.bounds, value)  # the first bound >= value, or +Inf
        with self._lock:
            counts, total = self._values.setdefault(key, ([0] * (len(self.bounds) + 1), [0.0]))
            counts[slot] += 1
            total[0] += value

    def count(self, *values: str) -> int:
        with self._lock:
            found = self._values.get(tuple(values))
            return sum(found[0]) if found else 0

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        with self._lock:
            items = sorted((k, (list(c), s[0])) for k, (c, s) in self._values.items())
        for key, (counts, total) in items:
            cumulative, buckets = 0, []
            for bound, n in zip((*self.bounds, math.inf), counts, strict=True):
                cumulative += n
                buckets.append(("+Inf" if math.isinf(bound) else f"{bound:g}", cumulative))
            family.add_metric(list(key), buckets, sum_value=total)
        return family
