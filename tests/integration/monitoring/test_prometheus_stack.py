"""The monitoring stack around a running Sandman (``sandman serve`` on real Docker,
simulated GPUs): a private Prometheus scrapes it with deploy/'s configuration and
rules, and every Grafana panel's query returns data; an alert about one session's
MIG instance goes through a real Alertmanager to Sandman's webhook and reaches that
session's user, and one about nothing in particular reaches the admins.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tests.integration.monitoring.stack import Service, alertmanager, prometheus, query
from tests.integration.support import HEADERS, Server
from tests.unit.deploy.dashboards import panel_queries
from tests.unit.observe.notify_receivers import WebhookReceiver, webhook_receiver

pytestmark = pytest.mark.integration

ALERTS_TOKEN = "alerts-token-for-the-test"
TOPOLOGY = """\
gpus:
  - model: A100-SXM4-40GB
    mig: static
    instances: [3g.20gb, 1g.5gb, 1g.5gb, 1g.5gb]
  - model: RTX-4090
"""
EXTRA_RULES = {
    "groups": [
        {
            "name": "test-e2e",
            "rules": [
                {
                    # About alice's MIG instance, named as dcgm-exporter names it.
                    "alert": "TestInstanceAlert",
                    "expr": "max by (UUID, GPU_I_ID) (DCGM_FI_DEV_FB_USED) and on (UUID, GPU_I_ID) "
                    'sandman_session_info{user="alice"}',
                    "labels": {"severity": "warning", "audience": "user"},
                    "annotations": {"summary": "Instance {{ $labels.GPU_I_ID }} needs you"},
                },
                {
                    "alert": "TestFleetAlert",
                    "expr": "vector(1)",
                    "labels": {"severity": "critical", "audience": "admins"},
                    "annotations": {"summary": "The fleet needs you"},
                },
            ],
        }
    ]
}


@pytest.fixture
def hooks() -> Iterator[WebhookReceiver]:
    yield from webhook_receiver()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_dashboards_and_alerts_on_a_running_sandman(
    server: Callable[..., Server], tmp_path: Path, hooks: WebhookReceiver
) -> None:
    topology = tmp_path / "topology.yaml"
    topology.write_text(TOPOLOGY)
    sandman = server(
        gpu_topology=str(topology),
        metrics_interval="1s",
        alerts_token=ALERTS_TOKEN,
        notify_allow_loopback="true",
        anomaly_interval="0",
    )
    sandman.start()
    alice = sandman.create("alice", mig_profile="1g.5gb", team="ml", project="vision")
    assert alice.status_code == 201, alice.text
    bob = sandman.create("bob", gpu_count=1, team="nlp")
    assert bob.status_code == 201, bob.text
    put = httpx.put(
        f"{sandman.url}/api/v1/users/alice/notifications",
        json={"webhook": {"url": f"{hooks.url}/alice"}, "terminal": False},
        headers=HEADERS,
    )
    assert put.status_code == 200, put.text
    defaults = httpx.put(
        f"{sandman.url}/api/v1/notifications/defaults",
        json={"admins": {"webhook": {"url": f"{hooks.url}/ops", "format": "slack"}}},
        headers=HEADERS,
    )
    assert defaults.status_code == 200, defaults.text

    work = tmp_path / "monitoring"
    work.mkdir()
    services: list[Service] = []
    try:
        am = alertmanager(work, sandman.url, ALERTS_TOKEN)
        services.append(am)
        prom = prometheus(work, sandman.url, am.url, EXTRA_RULES)
        services.append(prom)
        wait_until(
            lambda: (
                bool(query(prom, 'up{job="sandman"} == 1'))
                and bool(
                    query(prom, 'count_over_time(sandman_session_info{user="alice"}[1m]) > 10')
                )
            ),
            120,
            "ten scrapes of Sandman",
        )
        empty = [
            f"{q.dashboard} / {q.panel} / {q.ref}: {q.expr}"
            for q in panel_queries()
            if not query(prom, q.expr)
        ]
        assert not empty, "panels without data:\n" + "\n".join(empty)

        session_id = alice.json()["id"]
        wait_until(
            lambda: (
                any(c.path == "/alice" for c in hooks.calls)
                and any(c.path == "/ops" for c in hooks.calls)
            ),
            120,
            "the alerts to reach alice and the admins",
        )
        to_alice = next(c for c in hooks.calls if c.path == "/alice").body
        assert to_alice["session_id"] == session_id and to_alice["user_id"] == "alice"
        assert to_alice["kind"] == "TestInstanceAlert" and to_alice["severity"] == "warning"
        assert to_alice["subject"].startswith("Instance ")
        to_ops = next(c for c in hooks.calls if c.path == "/ops").body
        assert to_ops["text"].startswith("*The fleet needs you*")
        assert not any(c.path == "/alice" and "fleet" in str(c.body) for c in hooks.calls)
    except AssertionError:
        for service in services:
            print(f"--- {service.name}:\n{service.log.read_text()[-3000:]}")
        print(f"--- sandman:\n{(sandman.data_dir / 'serve.log').read_text()[-3000:]}")
        raise
    finally:
        for service in services:
            service.stop()
