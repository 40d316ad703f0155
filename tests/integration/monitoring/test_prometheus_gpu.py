"""Session GPU activity on Kubernetes, read from a real Prometheus (Debian's, on a
127.0.0.1 port of its own) that scrapes dcgm-exporter's text as its Kubernetes mode
writes it, served here on 127.0.0.1. One job keeps the exporter's labels
(``honor_labels``); the other labels its target as a pod of the GPU operator, so
Prometheus renames the session's labels ``exported_namespace``/``exported_pod``, as
on clusters scraping dcgm-exporter through Kubernetes service discovery. The
sampler's readings per pod follow; a pod without series, a Prometheus that does
not answer and one that answers something else are unknown, never idle."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from tests.integration.monitoring.stack import Service, binary, query, start
from tests.integration.support import free_port

from sandman.observe.prometheus_gpu import PrometheusGpu

pytestmark = pytest.mark.integration

NS = "sandman-sessions"
A100 = 'modelName="NVIDIA A100-SXM4-40GB",Hostname="gpu-node-1",DCGM_FI_DRIVER_VERSION="535.104.05"'


def _series(name: str, value: float, gpu: int, uuid: str, mig: str | None, **labels: str) -> str:
    parts = [f'gpu="{gpu}"', f'UUID="{uuid}"', f'device="nvidia{gpu}"', A100]
    if mig is not None:
        profile, instance = mig.split("/")
        parts += [f'GPU_I_PROFILE="{profile}"', f'GPU_I_ID="{instance}"']
    parts += [f'{key}="{text}"' for key, text in labels.items()]
    return f"{name}{{{','.join(parts)}}} {value:.6f}"


def _exposition(lines: list[str]) -> str:
    head = [
        "# HELP DCGM_FI_PROF_GR_ENGINE_ACTIVE Ratio of time the graphics engine is active.",
        "# TYPE DCGM_FI_PROF_GR_ENGINE_ACTIVE gauge",
        "# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).",
        "# TYPE DCGM_FI_DEV_GPU_UTIL gauge",
    ]
    return "\n".join(head + lines) + "\n"


ENGINE, UTIL = "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_DEV_GPU_UTIL"
G0, G1 = "GPU-5b3e0a4c-7f41-4c2d-9a0e-1f2b3c4d5e60", "GPU-8c9d0e1f-2a3b-4c5d-8e7f-9a0b1c2d3e4f"
SESSION = {"container": "session", "namespace": NS}

# dcgm-exporter's own labels kept (honor_labels): namespace, pod, container.
DIRECT = _exposition(
    [
        # sandman-a holds two MIG instances: engine activity 0.9 and 0.5
        _series(ENGINE, 0.9, 0, G0, "3g.20gb/1", pod="sandman-a", **SESSION),
        _series(ENGINE, 0.5, 0, G0, "1g.5gb/9", pod="sandman-a", **SESSION),
        # sandman-b a whole GPU without profiling metrics: utilisation only
        _series(UTIL, 40, 1, G1, None, pod="sandman-b", **SESSION),
        # sandman-c a MIG instance doing nothing: seen, and idle
        _series(ENGINE, 0.0, 0, G0, "1g.5gb/10", pod="sandman-c", **SESSION),
        # an instance nobody uses, and a pod of another namespace
        _series(ENGINE, 0.0, 0, G0, "1g.5gb/11", pod="", container="", namespace=""),
        _series(ENGINE, 1.0, 0, G0, "1g.5gb/12", pod="trainer", container="t", namespace="ml"),
    ]
)
# Scraped as a target labelled with the exporter pod's own namespace and pod.
OPERATOR = _exposition(
    [
        _series(ENGINE, 0.3, 1, G1, None, pod="sandman-d", **SESSION),
        _series(UTIL, 95, 1, G1, None, pod="sandman-d", **SESSION),
    ]
)


PAGES = {"/direct": DIRECT, "/operator": OPERATOR}


class Exporter(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        page = PAGES.get(self.path)
        body = (page or "not found\n").encode()
        self.send_response(200 if page else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def exporter() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Exporter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def prometheus(tmp_path: Path, exporter: str) -> Iterator[Service]:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "dcgm-direct",
                "honor_labels": True,
                "metrics_path": "/direct",
                "static_configs": [{"targets": [exporter]}],
            },
            {
                "job_name": "dcgm-operator",
                "metrics_path": "/operator",
                "static_configs": [
                    {
                        "targets": [exporter],
                        "labels": {"namespace": "gpu-operator", "pod": "nvidia-dcgm-exporter-x"},
                    }
                ],
            },
        ],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        binary("prometheus"),
        f"--config.file={path}",
        f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    service = start("prometheus", argv, f"http://127.0.0.1:{port}", tmp_path)
    try:
        yield service
    finally:
        service.stop()


def wait_for_scrapes(service: Service, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = {r["metric"]["job"] for r in query(service, "up == 1")}
        dcgm = query(service, '{__name__=~"DCGM_.*"}')
        if jobs == {"dcgm-direct", "dcgm-operator"} and len(dcgm) == 8:
            return
        time.sleep(0.3)
    raise AssertionError(f"Prometheus did not scrape both jobs: {service.log.read_text()[-3000:]}")


PODS = {
    "s-a": "sandman-a",
    "s-b": "sandman-b",
    "s-c": "sandman-c",
    "s-d": "sandman-d",
    "s-x": "sandman-x",  # no series: a pod on a node without dcgm-exporter, say
}


def test_readings_per_pod_from_a_real_prometheus(prometheus: Service) -> None:
    wait_for_scrapes(prometheus)
    renamed = query(prometheus, 'DCGM_FI_PROF_GR_ENGINE_ACTIVE{exported_pod="sandman-d"}')
    assert [r["metric"]["namespace"] for r in renamed] == ["gpu-operator"]
    assert renamed[0]["metric"]["exported_namespace"] == NS

    reader = PrometheusGpu(prometheus.url, NS)
    try:
        found = reader(PODS)
    finally:
        reader.close()
    assert found["s-a"] == pytest.approx(0.7)  # the mean engine activity of its instances
    assert found["s-b"] == pytest.approx(0.4)  # utilisation, where no engine activity
    assert found["s-c"] == 0.0  # seen idle
    assert found["s-d"] == pytest.approx(0.3)  # exported_ labels; engine activity first
    assert found["s-x"] == (
        f"no dcgm-exporter series for pod sandman-x in Prometheus at {prometheus.url}"
    )
    other = PrometheusGpu(prometheus.url, "ml")
    assert other({"t": "trainer", "a": "sandman-a"})["t"] == 1.0  # the namespace chosen
    assert isinstance(other({"a": "sandman-a"})["a"], str)
    other.close()


def test_a_prometheus_that_does_not_answer_is_unknown(prometheus: Service) -> None:
    wait_for_scrapes(prometheus)
    wrong_path = PrometheusGpu(f"{prometheus.url}/not-prometheus", NS)
    answered = wrong_path(PODS)
    assert set(answered) == set(PODS)
    assert all(
        isinstance(v, str) and v.startswith(f"Prometheus at {prometheus.url}/not-prometheus ")
        for v in answered.values()
    ), answered
    wrong_path.close()

    reader = PrometheusGpu(prometheus.url, NS, timeout=2)
    assert reader(PODS)["s-a"] == pytest.approx(0.7)
    prometheus.stop()
    gone = reader(PODS)
    assert gone == dict.fromkeys(PODS, gone["s-a"])
    assert isinstance(gone["s-a"], str)
    assert gone["s-a"].startswith(f"Prometheus at {prometheus.url} did not answer: ")
    reader.close()
    nobody = PrometheusGpu(f"http://127.0.0.1:{free_port()}", NS, timeout=2)
    assert all(isinstance(v, str) and "did not answer" in v for v in nobody(PODS).values())
    nobody.close()
