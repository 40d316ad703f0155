"""Counters, histograms, route templates and the gateway's numbers."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

from sandman.api.http_metrics import UNMATCHED, route_of
from sandman.gateway.relay import TrafficStats
from sandman.gateway.server import GatewayServer
from sandman.observe.counters import LabelledCounter, LabelledHistogram
from sandman.observe.service_metrics import gateway_families


def test_a_counter_starts_known_label_sets_at_zero() -> None:
    counter = LabelledCounter("sandman_things", "Things.", ("kind",), [("a",), ("b",)])
    counter.inc("b")
    counter.inc("c", amount=2)
    family = counter.family()
    assert [(s.name, s.labels, s.value) for s in family.samples] == [
        ("sandman_things_total", {"kind": "a"}, 0.0),
        ("sandman_things_total", {"kind": "b"}, 1.0),
        ("sandman_things_total", {"kind": "c"}, 2.0),
    ]


def test_a_histogram_has_cumulative_buckets() -> None:
    histogram = LabelledHistogram("sandman_wait_seconds", "Waits.", ("route",), (0.1, 1, 10))
    for value in (0.05, 0.1, 0.5, 3, 30):
        histogram.observe(value, "/x")
    samples = {(s.name, s.labels.get("le")): s.value for s in histogram.family().samples}
    assert samples[("sandman_wait_seconds_bucket", "0.1")] == 2  # le is inclusive
    assert samples[("sandman_wait_seconds_bucket", "1")] == 3
    assert samples[("sandman_wait_seconds_bucket", "10")] == 4
    assert samples[("sandman_wait_seconds_bucket", "+Inf")] == 5
    assert samples[("sandman_wait_seconds_count", None)] == 5
    assert samples[("sandman_wait_seconds_sum", None)] == 33.65
    assert histogram.count("/x") == 5


def _route(path: str, template: str) -> Any:
    regex = re.compile("^" + re.sub(r"\{[a-z_]+\}", "[^/]+", template) + "$")
    return SimpleNamespace(path=template, path_regex=regex)


def test_the_route_is_the_template_with_its_prefix() -> None:
    route = _route("/sessions/{session_id}", "/sessions/{session_id}")
    assert route_of({"route": route, "path": "/api/v1/sessions/abc"}) == (
        "/api/v1/sessions/{session_id}"
    )
    assert route_of({"route": route, "path": "/sessions/abc"}) == "/sessions/{session_id}"
    assert route_of({"path": "/nowhere"}) == UNMATCHED


class Conn:
    def __init__(self, user_id: str, from_client: int, to_client: int) -> None:
        self.user_id = user_id
        self.stats = TrafficStats(from_client=from_client, to_client=to_client)


def test_the_gateway_counts_bytes_of_open_and_closed_connections() -> None:
    gateway = GatewayServer(
        SimpleNamespace(),  # type: ignore[arg-type]
        listen_host="127.0.0.1",
        listen_port=0,
        host_key_path=None,  # type: ignore[arg-type]
        identity_key_path=None,  # type: ignore[arg-type]
    )
    first, second = Conn("alice", 100, 2000), Conn("alice", 5, 50)
    gateway._register(first)  # type: ignore[arg-type]
    gateway._register(second)  # type: ignore[arg-type]
    gateway.counters.refuse("no_session")
    state = gateway.state()
    assert (state.open_connections, state.bytes_from_client, state.bytes_to_client) == (
        2,
        105,
        2050,
    )
    gateway._unregister(first)  # type: ignore[arg-type]
    gateway._unregister(first)  # type: ignore[arg-type]  (twice: counted once)
    second.stats.to_client += 10
    state = gateway.state()
    assert (state.open_connections, state.bytes_from_client, state.bytes_to_client) == (
        1,
        105,
        2060,
    )
    families = {f.name: f for f in gateway_families(state)}
    refused = {s.labels["reason"]: s.value for s in families["sandman_gateway_refused"].samples}
    assert refused == {"startup_limit": 0, "authentication": 0, "no_session": 1, "lookup_failed": 0}
    relayed = {s.labels["direction"]: s.value for s in families["sandman_gateway_bytes"].samples}
    assert relayed == {"from_client": 105, "to_client": 2060}
