"""The metrics parts put together for one Sandman: the collector with its GPU
sampler, ``/metrics``' registry, the service counters hung on the services'
hooks, and the history. ``core.Sandman`` builds one ``Metrics`` and runs its
two timers; everything else is here, so the composition root stays a root.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sandman.observe.collector import GpuSampler, MetricsCollector
from sandman.observe.history_store import MetricHistory
from sandman.observe.registry import MetricsRegistry
from sandman.observe.service_metrics import ServiceMetrics
from sandman.observe.simulated import simulated_samples

if TYPE_CHECKING:
    from sandman.config import Settings
    from sandman.gpu.types import GpuDevice, GpuInventory
    from sandman.observe.samples import GpuSample, SessionGpuReader
    from sandman.runtime.base import SessionRuntime
    from sandman.services.creation import CreationPool
    from sandman.services.reconciler import Reconciler
    from sandman.services.sessions import SessionService
    from sandman.store.database import Database

__all__ = ["Metrics", "gpu_sampler", "session_gpu_reader"]


def gpu_sampler(inventory: GpuInventory) -> tuple[GpuSampler, object | None]:
    """The sampler for this inventory, and what must be closed with it (NVML)."""
    if inventory.simulated:
        return simulated_samples, None
    if inventory.backend == "kubernetes":
        # The devices are the nodes' (the kubelet picks them); their metrics come from the
        # cluster's dcgm-exporter through Prometheus, not from Sandman's process.
        return no_samples, None
    from sandman.observe.nvml import NvmlSampler

    sampler = NvmlSampler()
    return sampler, sampler


def session_gpu_reader(
    settings: Settings, inventory: GpuInventory
) -> tuple[SessionGpuReader | None, object | None]:
    """Where sessions' GPU activity is read per session (Kubernetes), and what must be
    closed with it; None elsewhere, where the GPU sampler's devices tell it."""
    if inventory.backend != "kubernetes":
        return None, None
    from sandman.observe.prometheus_gpu import PrometheusGpu, blind_reader

    if not settings.gpu_metrics_prometheus:
        return blind_reader, None  # unknown: sessions holding a GPU are not reclaimed
    reader = PrometheusGpu(settings.gpu_metrics_prometheus, settings.kube_namespace)
    return reader, reader


def no_samples(
    devices: Sequence[GpuDevice], activity: Mapping[str, float], at: datetime
) -> list[GpuSample]:
    return []


class Metrics:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        sessions: SessionService,
        inventory: GpuInventory,
        runtime: SessionRuntime,
        sampler: GpuSampler | None = None,
    ) -> None:
        self._closing: object | None = None
        if sampler is None:
            sampler, self._closing = gpu_sampler(inventory)
        session_gpu, self._closing_reader = session_gpu_reader(settings, inventory)
        self.service = ServiceMetrics()
        self.registry = MetricsRegistry(self.service, socket.gethostname())
        self.history = MetricHistory(db, timedelta(seconds=settings.metrics_retention))
        self.collector = MetricsCollector(
            sessions, inventory, runtime, sampler, session_gpu=session_gpu
        )
        self.collector.listeners.append(self.registry.prepare)
        self.collector.listeners.append(self.history.record)
        token = settings.metrics_token
        self.token = token.get_secret_value() if token is not None else None
        sessions.end_hooks.append(self.service.end_hook(lambda sid: sessions.get(sid).status))

    def attach(self, creator: CreationPool, reconciler: Reconciler) -> None:
        """Count creates and reconciler repairs."""
        creator.result_hooks.append(self.service.create_finished)
        reconciler.report_hooks.append(self.service.reconciled)

    def close(self) -> None:
        self.collector.close()
        self.history.flush()
        for closing in (self._closing, self._closing_reader):
            close = getattr(closing, "close", None)
            if close is not None:
                close()
