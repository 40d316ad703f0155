"""A real Prometheus scraping a real ``sandman serve`` with real sessions: the GPU
series join the sessions' owners, and a busy container makes its simulated GPU
busy. Prometheus runs on 127.0.0.1 with a private config and storage, and is
stopped at teardown."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from tests.integration.monitoring import stack
from tests.integration.support import Server, free_port, ssh, write_key

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
METRICS_TOKEN = "scrape-token"
JOIN = (
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE * on(UUID, GPU_I_ID) "
    'group_left(user, session) sandman_session_info{user="%s"}'
)

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="needs Prometheus (scripts/setup.sh --for-tests installs Debian's prometheus)",
)


class Prometheus:
    def __init__(self, directory: Path, target: str) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = directory / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: sandman\n"
            "    metrics_path: /metrics\n"
            "    authorization:\n"
            f"      credentials: {METRICS_TOKEN}\n"
            "    static_configs:\n"
            f"      - targets: ['{target}']\n"
        )
        assert PROMETHEUS is not None
        self.service = stack.start(
            "prometheus",
            [
                PROMETHEUS, f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            self.url,
            directory,
        )  # fmt: skip

    def logs(self) -> str:
        return self.service.log.read_text(errors="replace")[-3000:]

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(
        self, expr: str, ok: Callable[[list[dict[str, Any]]], bool], timeout: float = 90
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = self.query(expr)
            if ok(found):
                return found
            time.sleep(1)
        raise AssertionError(f"{expr} never held; last answer {found}\n{self.logs()}")

    def stop(self) -> None:
        self.service.stop()


@pytest.fixture
def sandman(server: Callable[..., Server]) -> Server:
    found = server(
        gpu_topology="a100-40gb-7x1g", metrics_interval="1s", metrics_token=METRICS_TOKEN
    )
    found.start()
    return found


@pytest.fixture
def prometheus(sandman: Server, tmp_path: Path) -> Iterator[Prometheus]:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    found = Prometheus(directory, sandman.url.removeprefix("http://"))
    yield found
    found.stop()


def _value(series: dict[str, Any]) -> float:
    return float(series["value"][1])


def test_prometheus_joins_gpu_activity_to_the_sessions_owner(
    sandman: Server, prometheus: Prometheus, docker_client: Any
) -> None:
    busy = sandman.create("alice")
    assert busy.status_code == 201, busy.text
    idle = sandman.create("bob")
    assert idle.status_code == 201, idle.text
    container = docker.from_env(version="auto").containers.get(busy.json()["container_id"])
    # One core busy for a while: the simulated GPU follows the container's CPU.
    container.exec_run(["sh", "-c", "timeout 120 sh -c 'while :; do :; done'"], detach=True)

    prometheus.wait_for('up{job="sandman"}', lambda r: bool(r) and _value(r[0]) == 1)
    joined = prometheus.wait_for(JOIN % "alice", lambda r: bool(r) and _value(r[0]) > 0.5)
    (series,) = joined
    assert series["metric"]["user"] == "alice"
    assert series["metric"]["session"] == busy.json()["session_id"]
    assert series["metric"]["GPU_I_PROFILE"] == "1g.5gb"
    assert series["metric"]["UUID"] == busy.json()["parent_gpu_uuid"]

    quiet = prometheus.wait_for(JOIN % "bob", lambda r: bool(r))
    assert _value(quiet[0]) < 0.3
    active = prometheus.wait_for(
        'sandman_session_gpu_active{user="alice"}', lambda r: bool(r) and _value(r[0]) > 0.5
    )
    assert active[0]["metric"]["session"] == busy.json()["session_id"]
    ratio = prometheus.wait_for('mig_allocation_ratio{profile="1g.5gb"}', lambda r: bool(r))
    assert _value(ratio[0]) == pytest.approx(2 / 7)
    running = prometheus.wait_for('sandman_sessions{status="running"}', lambda r: bool(r))
    assert _value(running[0]) == 2
    created = prometheus.query("sandman_session_create_seconds_count")
    assert created and _value(created[0]) == 2
    routes = prometheus.query('sandman_http_requests_total{route="/api/v1/sessions"}')
    assert routes and _value(routes[0]) == 2


def test_the_text_passes_promtool_but_for_dcgm_exporters_own_label_names(
    sandman: Server, prometheus: Prometheus
) -> None:
    assert sandman.create("alice").status_code == 201
    prometheus.wait_for('sandman_session_info{user="alice"}', lambda r: bool(r))
    text = httpx.get(f"{sandman.url}/metrics", timeout=10).text
    assert PROMTOOL is not None
    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    complaints = [
        line for line in checked.stderr.splitlines() + checked.stdout.splitlines() if line
    ]
    # dcgm-exporter's labels (modelName, UUID, GPU_I_ID...) are not snake_case: kept as they are.
    assert all(line.startswith("DCGM_FI_") and "camelCase" in line for line in complaints), (
        complaints
    )


def test_the_gateways_traffic_and_refusals_reach_prometheus(
    sandman: Server, prometheus: Prometheus, tmp_path: Path
) -> None:
    session = sandman.create("alice").json()
    key = write_key(tmp_path, session["ssh_private_key"])
    relayed = ssh(session, key, "head -c 200000 /dev/zero")
    assert relayed.returncode == 0 and len(relayed.stdout) == 200000, relayed.stderr
    assert ssh(session, key, "true", user="mallory").returncode == 255  # no such key
    out = prometheus.wait_for(
        'sandman_gateway_bytes_total{direction="to_client"}',
        lambda r: bool(r) and _value(r[0]) >= 200000,
    )
    assert out
    refused = prometheus.wait_for(
        'sandman_gateway_refused_total{reason="authentication"}',
        lambda r: bool(r) and _value(r[0]) >= 1,
    )
    assert refused
    assert prometheus.query('sandman_gateway_connections{state="open"}')
