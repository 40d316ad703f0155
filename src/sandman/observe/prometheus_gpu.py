"""Session GPU activity on Kubernetes, read from the cluster's Prometheus.

On Kubernetes the kubelet picks the device a session pod gets, so Sandman cannot
measure it; NVIDIA's dcgm-exporter, in its Kubernetes mode, labels each GPU's
series with the pod using it (``namespace``, ``pod``, ``container``; ``exported_``
before them when Prometheus keeps the exporter pod's own labels). One instant
query per collection pass (``/api/v1/query``) reads the series of the session
namespace: ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` (0-1), or where a pod has none,
``DCGM_FI_DEV_GPU_UTIL`` (percent). A pod's activity is the mean over its GPUs.

What is not found is unknown, never idle: a Prometheus that does not answer, or
answers an error, makes every session unknown; a pod without series makes its
own session unknown. Building the query and reading its answer are pure.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from sandman.runtime.kubernetes.names import pod_name

__all__ = [
    "ENGINE_ACTIVE",
    "GPU_UTIL",
    "NO_SOURCE",
    "PrometheusGpu",
    "blind_reader",
    "pod_activity",
    "query_for",
    "session_readings",
]

log = logging.getLogger(__name__)

ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"  # 0-1
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"  # 0-100
QUERY_TIMEOUT = 5.0  # seconds; a pass waits at most this long for Prometheus
NO_SOURCE = "no GPU metrics source on Kubernetes; set SANDMAN_GPU_METRICS_PROMETHEUS"


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def query_for(namespace: str) -> str:
    """Both metrics of every pod in ``namespace``, under either labelling."""
    names = f'__name__=~"{ENGINE_ACTIVE}|{GPU_UTIL}"'
    ns = _quoted(namespace)
    return f"{{{names}, namespace={ns}}} or {{{names}, exported_namespace={ns}}}"


def pod_activity(result: Sequence[Mapping[str, Any]], namespace: str) -> dict[str, float]:
    """Pod name -> activity (0-1) from an instant query's ``result`` (pure): the mean
    engine activity of its GPUs, or their mean utilisation where it has no engine
    activity. Series of other namespaces, without a pod, or without a number are
    left out."""
    engine: dict[str, list[float]] = {}
    util: dict[str, list[float]] = {}
    for item in result:
        labels = item.get("metric") or {}
        if labels.get("exported_namespace") == namespace:
            pod = labels.get("exported_pod")
        elif labels.get("namespace") == namespace:
            pod = labels.get("pod")
        else:
            continue
        try:
            value = float(item["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if not pod or not math.isfinite(value):
            continue
        name = labels.get("__name__")
        if name == ENGINE_ACTIVE:
            engine.setdefault(pod, []).append(min(1.0, max(0.0, value)))
        elif name == GPU_UTIL:
            util.setdefault(pod, []).append(min(1.0, max(0.0, value / 100.0)))
    found = {pod: sum(values) / len(values) for pod, values in util.items()}
    found.update({pod: sum(values) / len(values) for pod, values in engine.items()})
    return found


def session_readings(
    pods: Mapping[str, str], found: Mapping[str, float], where: str
) -> dict[str, float | str]:
    """Session id -> its pod's activity, or why it is unknown (pure)."""
    readings: dict[str, float | str] = {}
    for session_id, name in pods.items():
        pod = pod_name(name)
        value = found.get(pod)
        readings[session_id] = (
            value if value is not None else f"no dcgm-exporter series for pod {pod} in {where}"
        )
    return readings


def blind_reader(pods: Mapping[str, str]) -> dict[str, float | str]:
    """Kubernetes without a GPU metrics source: every session's GPU is unknown."""
    return dict.fromkeys(pods, NO_SOURCE)


class PrometheusGpu:
    """The reader (``SessionGpuReader``) asking one Prometheus; see the module's doc."""

    def __init__(
        self,
        url: str,
        namespace: str,
        timeout: float = QUERY_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.namespace = namespace
        self.where = f"Prometheus at {self.url}"
        self._client = httpx.Client(timeout=timeout, transport=transport)
        self._failing: str | None = None  # the last failure logged, to log each once

    def query(self) -> dict[str, float] | str:
        """Pod -> activity, or why Prometheus gave no answer."""
        try:
            answer = self._client.get(
                f"{self.url}/api/v1/query", params={"query": query_for(self.namespace)}
            )
            body = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            return f"{self.where} did not answer: {str(exc) or type(exc).__name__}"
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            return f"{self.where} refused the query: {error or f'HTTP {answer.status_code}'}"
        data = body.get("data") or {}
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, list):
            return f"{self.where} answered no vector"
        return pod_activity(result, self.namespace)

    def __call__(self, pods: Mapping[str, str]) -> dict[str, float | str]:
        found = self.query()
        if isinstance(found, str):
            if found != self._failing:
                log.warning("session GPU activity unknown: %s", found)
            self._failing = found
            return dict.fromkeys(pods, found)
        if self._failing is not None:
            log.info("session GPU activity: %s answers again", self.where)
        self._failing = None
        return session_readings(pods, found, self.where)

    def close(self) -> None:
        self._client.close()
