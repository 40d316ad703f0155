"""Session GPU activity on Kubernetes from dcgm-exporter's series in Prometheus: the
query, reading its answer per pod under either labelling, what is unknown (never
idle), the collector's use of it, the setting, and which reader a deployment gets.
A real Prometheus answers in tests/integration/monitoring/test_prometheus_gpu.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import fake_core

from sandman.config import Settings
from sandman.core import Sandman
from sandman.errors import ConfigurationError
from sandman.gpu.inventory.kubernetes import KubernetesInventory
from sandman.gpu.types import GpuRequest
from sandman.observe.prometheus_gpu import (
    NO_SOURCE,
    PrometheusGpu,
    blind_reader,
    pod_activity,
    query_for,
    session_readings,
)
from sandman.observe.wiring import session_gpu_reader
from sandman.services.requests import SessionRequest

NS = "sandman-sessions"


def series(name: str, value: str, **labels: str) -> dict[str, Any]:
    return {"metric": {"__name__": name, **labels}, "value": [1700000000.0, value]}


ENGINE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
UTIL = "DCGM_FI_DEV_GPU_UTIL"


def test_the_query_asks_for_both_metrics_under_both_labellings() -> None:
    assert query_for(NS) == (
        '{__name__=~"DCGM_FI_PROF_GR_ENGINE_ACTIVE|DCGM_FI_DEV_GPU_UTIL", '
        'namespace="sandman-sessions"} or '
        '{__name__=~"DCGM_FI_PROF_GR_ENGINE_ACTIVE|DCGM_FI_DEV_GPU_UTIL", '
        'exported_namespace="sandman-sessions"}'
    )
    assert 'namespace="a\\"b"' in query_for('a"b')


def test_a_pods_activity_is_its_engine_activity_else_its_utilisation() -> None:
    result = [
        # two GPUs of one pod: the mean engine activity; its utilisation is not used
        series(ENGINE, "0.9", namespace=NS, pod="sandman-a", container="session", gpu="0"),
        series(ENGINE, "0.5", namespace=NS, pod="sandman-a", container="session", gpu="1"),
        series(UTIL, "3", namespace=NS, pod="sandman-a", container="session", gpu="0"),
        # a GPU without engine activity (no profiling): its utilisation, in percent
        series(UTIL, "40", namespace=NS, pod="sandman-b", container="session"),
        # the exporter pod's own labels kept, the session's as exported_
        series(
            ENGINE,
            "0.25",
            namespace="gpu-operator",
            pod="dcgm-exporter-x",
            exported_namespace=NS,
            exported_pod="sandman-c",
        ),
        series(ENGINE, "0.7", namespace="other", pod="sandman-d"),  # another namespace
        series(ENGINE, "0.7", namespace=NS),  # a GPU no pod uses
        series(ENGINE, "NaN", namespace=NS, pod="sandman-e"),
        series(ENGINE, "1.5", namespace=NS, pod="sandman-f"),  # kept within 0-1
        {"metric": {"__name__": ENGINE, "namespace": NS, "pod": "sandman-g"}},  # no value
    ]
    assert pod_activity(result, NS) == pytest.approx(
        {"sandman-a": 0.7, "sandman-b": 0.4, "sandman-c": 0.25, "sandman-f": 1.0}
    )


def test_a_pod_without_series_is_unknown_by_name() -> None:
    pods = {"s1": "sandman-a", "s2": "sandman-b", "s3": "Not_A_Pod_Name"}
    found = session_readings(pods, {"sandman-a": 0.0}, "Prometheus at http://p")
    assert found["s1"] == 0.0  # seen, and idle
    assert found["s2"] == "no dcgm-exporter series for pod sandman-b in Prometheus at http://p"
    assert isinstance(found["s3"], str) and "not-a-pod-name--" in found["s3"]  # its pod's name
    assert blind_reader({"s1": "sandman-a"}) == {"s1": NO_SOURCE}


def reader(handler: Any) -> PrometheusGpu:
    return PrometheusGpu("http://prometheus:9090/", NS, transport=httpx.MockTransport(handler))


def test_the_reader_asks_the_query_api_and_maps_pods_to_sessions() -> None:
    asked: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        body = {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [
                    series(ENGINE, "0.6", namespace=NS, pod="sandman-a"),
                ],
            },
        }
        return httpx.Response(200, json=body)

    found = reader(answer)({"s1": "sandman-a", "s2": "sandman-b"})
    assert found["s1"] == pytest.approx(0.6)
    assert found["s2"] == (
        "no dcgm-exporter series for pod sandman-b in Prometheus at http://prometheus:9090"
    )
    assert asked[0].url.path == "/api/v1/query"
    assert asked[0].url.params["query"] == query_for(NS)


def test_a_prometheus_that_fails_makes_every_session_unknown() -> None:
    def refuses(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"status": "error", "error": "parse error"})

    def not_json(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    pods = {"s1": "sandman-a", "s2": "sandman-b"}
    where = "Prometheus at http://prometheus:9090"
    assert reader(refuses)(pods) == dict.fromkeys(pods, f"{where} refused the query: parse error")
    for handler in (not_json, unreachable):
        found = reader(handler)(pods)
        assert set(found) == set(pods)
        assert all(
            isinstance(v, str) and v.startswith(f"{where} did not answer") for v in found.values()
        )


# ------------------------------------------------------------------ the collector
@pytest.fixture
def core(tmp_path: Path) -> Iterator[Sandman]:
    made = fake_core(tmp_path, FakeRuntime(), gpu_topology="mixed", default_mig_profile=None)
    yield made
    made.stop()


def test_the_collector_takes_gpu_sessions_activity_from_the_reader(core: Sandman) -> None:
    def start(user: str, gpu: GpuRequest) -> str:
        return core.sessions.create(SessionRequest(user_id=user, gpu=gpu)).session.id

    busy = start("alice", GpuRequest(mig_profile="1g.10gb"))
    missing = start("bob", GpuRequest(gpu_count=1))
    cpu_only = start("carol", GpuRequest(gpu_count=0))
    pods = {row.id: row.container_id or row.container_name for row in core.sessions.list_sessions()}
    asked: list[dict[str, str]] = []

    def read(given: Any) -> dict[str, float | str]:
        asked.append(dict(given))
        return {busy: 0.8}

    core.collector.session_gpu = read
    snapshot = core.collector.collect()
    assert asked == [{busy: pods[busy], missing: pods[missing]}]  # only sessions with a GPU
    assert snapshot.sessions[busy].gpu_active == 0.8
    assert snapshot.sessions[busy].gpu_unknown is None
    assert snapshot.sessions[missing].gpu_active is None
    assert snapshot.sessions[missing].gpu_unknown == "no GPU reading for it"
    assert snapshot.sessions[cpu_only].gpu_unknown is None

    def fails(given: Any) -> dict[str, float | str]:
        raise RuntimeError("boom")

    core.collector.session_gpu = fails
    snapshot = core.collector.collect()
    assert snapshot.sessions[busy].gpu_unknown == "reading GPU activity failed: boom"
    assert snapshot.sessions[cpu_only].gpu_unknown is None


# ------------------------------------------------------------------ the setting
def test_the_setting_is_a_prometheus_base_url_on_kubernetes(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, runtime="kubernetes", gpu_metrics_prometheus=" http://prom:9090/ "
    )
    assert settings.gpu_metrics_prometheus == "http://prom:9090"
    settings.check()
    assert Settings(data_dir=tmp_path).gpu_metrics_prometheus == ""
    path = Settings(data_dir=tmp_path, gpu_metrics_prometheus="https://o.example/prometheus")
    assert path.gpu_metrics_prometheus == "https://o.example/prometheus"
    for bad in ("prom:9090", "ftp://prom", "http://prom:9090/?x=1", "http://u:p@prom", "http://"):
        with pytest.raises(ValidationError, match="must be a Prometheus base URL"):
            Settings(data_dir=tmp_path, gpu_metrics_prometheus=bad)
    docker = Settings(data_dir=tmp_path, gpu_metrics_prometheus="http://prom:9090")
    with pytest.raises(ConfigurationError, match="on Kubernetes only"):
        docker.check()


def test_which_reader_a_deployment_gets(tmp_path: Path, core: Sandman) -> None:
    cluster = KubernetesInventory(lambda: ([], []), max_age=0)
    kube = Settings(data_dir=tmp_path, runtime="kubernetes")
    assert session_gpu_reader(kube, cluster) == (blind_reader, None)
    sourced = kube.model_copy(update={"gpu_metrics_prometheus": "http://prom:9090"})
    found, closing = session_gpu_reader(sourced, cluster)
    assert isinstance(found, PrometheusGpu) and closing is found
    assert found.url == "http://prom:9090" and found.namespace == "sandman-sessions"
    found.close()
    assert session_gpu_reader(sourced, core.inventory) == (None, None)  # it sees its GPUs
    assert core.collector.session_gpu is None
