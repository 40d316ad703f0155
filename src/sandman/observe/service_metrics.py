"""What the service itself counts: session creates and ends, reconciler repairs,
HTTP requests, and the gateway's connections, refusals and bytes.

The services do not know about metrics: they have hook lists (a session ended, a
create finished, a reconciler pass reported), and ``attach`` hangs these counters
on them. The gateway keeps plain integers (``gateway.counters``) that are read
when ``/metrics`` is scraped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from sandman.domain import SessionStatus
from sandman.errors import ERROR_CODES
from sandman.gateway.counters import GatewayState
from sandman.observe.counters import LabelledCounter, LabelledHistogram

__all__ = [
    "REPAIR_KINDS",
    "ServiceMetrics",
    "budget_families",
    "gateway_families",
    "queue_families",
]

log = logging.getLogger(__name__)

CREATE_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60, 120)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
ENDED = tuple(s.value for s in SessionStatus if s.ended)
# ReconcileReport's lists: what one pass repaired.
REPAIR_KINDS = (
    "removed_containers",
    "ended_sessions",
    "abandoned_sessions",
    "destroyed_instances",
)


class _Report(Protocol):
    """The parts of a ``ReconcileReport`` counted here."""

    removed_containers: list[str]
    ended_sessions: list[str]
    abandoned_sessions: list[str]
    destroyed_instances: list[str]


class ServiceMetrics:
    def __init__(self) -> None:
        self.create_seconds = LabelledHistogram(
            "sandman_session_create_seconds",
            "How long a session create took, from the request to its sshd answering "
            "(or to its failure).",
            (),
            CREATE_BUCKETS,
        )
        self.create_failures = LabelledCounter(
            "sandman_session_create_failures",
            "Session creates that failed, by error code.",
            ("code",),
            [(code,) for code in ERROR_CODES if code not in ("not_found", "method_not_allowed")],
        )
        self.ended = LabelledCounter(
            "sandman_sessions_ended",
            "Sessions that ended, by their final status.",
            ("status",),
            [(status,) for status in ENDED],
        )
        self.repairs = LabelledCounter(
            "sandman_reconciler_repairs",
            "What the reconciler repaired, by kind.",
            ("kind",),
            [(kind,) for kind in REPAIR_KINDS],
        )
        self.http_requests = LabelledCounter(
            "sandman_http_requests",
            "HTTP requests answered, by route template and status.",
            ("route", "status"),
        )
        self.http_seconds = LabelledHistogram(
            "sandman_http_request_seconds",
            "How long HTTP requests took to answer, by route template.",
            ("route",),
            HTTP_BUCKETS,
        )

    # ---- hooks ---------------------------------------------------------------

    def create_finished(self, seconds: float, code: str | None) -> None:
        """A create ended: in a running session (``code`` None) or with an error code."""
        self.create_seconds.observe(seconds)
        if code is not None:
            self.create_failures.inc(code)

    def session_ended(self, status: str) -> None:
        self.ended.inc(status)

    def reconciled(self, report: _Report) -> None:
        for kind in REPAIR_KINDS:
            found = len(getattr(report, kind))
            if found:
                self.repairs.inc(kind, amount=found)

    def http_request(self, route: str, status: int, seconds: float) -> None:
        self.http_requests.inc(route, str(status))
        self.http_seconds.observe(seconds, route)

    def end_hook(self, status_of: Callable[[str], str]) -> Callable[[str, str, str], None]:
        """A ``SessionHook`` counting the ended session by its final status, which
        ``status_of`` reads (the hook is told the reason, not the status)."""

        def ended(_user_id: str, session_id: str, _reason: str) -> None:
            self.session_ended(status_of(session_id))

        return ended

    def families(self) -> list[Metric]:
        return [
            self.create_seconds.family(),
            self.create_failures.family(),
            self.ended.family(),
            self.repairs.family(),
            self.http_requests.family(),
            self.http_seconds.family(),
        ]


def gateway_families(state: GatewayState) -> list[Metric]:
    """The gateway's numbers: open and pending connections, refusals, relayed bytes."""
    connections = GaugeMetricFamily(
        "sandman_gateway_connections",
        "Gateway connections now: open (authenticated) or pending (not yet).",
        labels=("state",),
    )
    connections.add_metric(["open"], state.open_connections)
    connections.add_metric(["pending"], state.pending_connections)
    refused = CounterMetricFamily(
        "sandman_gateway_refused",
        "Gateway connections refused, by reason.",
        labels=("reason",),
    )
    for reason, count in sorted(state.refused.items()):
        refused.add_metric([reason], count)
    relayed = CounterMetricFamily(
        "sandman_gateway_bytes",
        "Payload bytes the gateway relayed, from or to clients.",
        labels=("direction",),
    )
    relayed.add_metric(["from_client"], state.bytes_from_client)
    relayed.add_metric(["to_client"], state.bytes_to_client)
    return [connections, refused, relayed]


def queue_families(waiting: dict[str, int]) -> list[Metric]:
    """``sandman_queue_waiting{profile}``: queued requests by what they ask for."""
    family = GaugeMetricFamily(
        "sandman_queue_waiting",
        "Requests waiting in the queue, by the profile (or GPU size) they ask for.",
        labels=("profile",),
    )
    for profile, count in sorted(waiting.items()):
        family.add_metric((profile,), float(count))
    return [family]


def budget_families(
    used: dict[tuple[str, str], float], hourly: dict[tuple[str, str], float]
) -> list[Metric]:
    """``sandman_budget_used_ratio{kind, name}`` (this month's spend / the budget) and
    seed 003's ``gpu_hourly_cost{team, project}`` (what the running sessions cost per
    hour now, after discounts), as of the last budget sweep."""
    ratio = GaugeMetricFamily(
        "sandman_budget_used_ratio",
        "This month's spend of a team's or project's budget, as a fraction of it.",
        labels=("kind", "name"),
    )
    for (kind, name), value in sorted(used.items()):
        ratio.add_metric((kind, name), value)
    cost = GaugeMetricFamily(
        "gpu_hourly_cost",
        "What the running sessions of a team and project cost per hour now.",
        labels=("team", "project"),
    )
    for (team, project), value in sorted(hourly.items()):
        cost.add_metric((team, project), value)
    return [ratio, cost]
