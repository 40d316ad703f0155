"""A snapshot as Prometheus metric families (pure: samples in, families out).

GPU series carry NVIDIA dcgm-exporter's names, units and labels, so dashboards
and alert rules written for it work on Sandman unchanged:

- labels ``gpu`` (index), ``UUID`` (the physical GPU's, also on a MIG instance's
  series), ``pci_bus_id``, ``device`` (``nvidia0``...), ``modelName``, and
  ``Hostname``; a MIG instance's series add ``GPU_I_PROFILE`` and ``GPU_I_ID``;
- like dcgm-exporter's default (``-d f``), a GPU with MIG instances is reported
  through its instances only; temperature, power, XID, ECC and clock reasons
  are the GPU's and repeat on each of its instances, frame buffer and engine
  activity are the instance's own, and utilisation (which NVML does not report
  under MIG) is absent;
- ``DCGM_FI_DEV_ECC_DBE_VOL_TOTAL`` is typed ``untyped``: dcgm-exporter calls
  it a counter without the ``_total`` suffix that Prometheus' client writers
  append to counters; its name stays exactly dcgm-exporter's.

Beside them: the seed documents' names (``gpu_utilization``, ``gpu_temperature``,
``mig_allocation_ratio``), who holds what (``sandman_session_info``, joined to
GPU series ``on(UUID, GPU_I_ID)``), and each session's activity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.core import Metric

from sandman.domain import ACTIVE_STATUSES
from sandman.gpu.catalogue import find_model
from sandman.observe.samples import GpuSample, MetricsSnapshot

__all__ = [
    "DCGM_FIELDS",
    "dcgm_families",
    "seed_families",
    "session_families",
    "snapshot_families",
]


@dataclass(frozen=True)
class DcgmField:
    name: str
    type: str
    help: str
    value: Callable[[GpuSample], float | int | None]
    of_gpu: bool = False  # a value of the physical GPU, repeated on its instances


DCGM_FIELDS: tuple[DcgmField, ...] = (
    DcgmField("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", lambda s: s.util_percent),
    DcgmField(
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        "gauge",
        "Memory utilization (in %).",
        lambda s: s.mem_copy_util_percent,
    ),
    DcgmField(
        "DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).", lambda s: s.fb_free_mib
    ),
    DcgmField(
        "DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", lambda s: s.fb_used_mib
    ),
    DcgmField(
        "DCGM_FI_DEV_GPU_TEMP",
        "gauge",
        "GPU temperature (in C).",
        lambda s: s.temperature_c,
        of_gpu=True,
    ),
    DcgmField(
        "DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", lambda s: s.power_w, of_gpu=True
    ),
    DcgmField(
        "DCGM_FI_DEV_XID_ERRORS",
        "gauge",
        "Value of the last XID error encountered.",
        lambda s: s.xid,
        of_gpu=True,
    ),
    DcgmField(
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "unknown",
        "Total number of double-bit volatile ECC errors.",
        lambda s: s.ecc_dbe,
        of_gpu=True,
    ),
    DcgmField(
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
        "gauge",
        "Current clock throttle reasons (NVML bit mask).",
        lambda s: s.throttle_reasons,
        of_gpu=True,
    ),
    DcgmField(
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "gauge",
        "Ratio of time the graphics engine is active.",
        lambda s: s.gr_engine_active,
    ),
)


def _labels(sample: GpuSample, hostname: str) -> dict[str, str]:
    labels = {
        "gpu": str(sample.index),
        "UUID": sample.gpu_uuid,
        "pci_bus_id": sample.pci_bus_id or "",
        "device": f"nvidia{sample.index}",
        "modelName": sample.model,
    }
    if sample.is_mig:
        labels["GPU_I_PROFILE"] = sample.mig_profile or ""
        labels["GPU_I_ID"] = str(sample.gpu_instance_id)
    labels["Hostname"] = hostname
    return labels


def _entities(gpus: Sequence[GpuSample]) -> list[tuple[GpuSample, GpuSample]]:
    """(entity, its physical GPU): a GPU's instances where it has some, else the GPU."""
    by_parent: dict[str, list[GpuSample]] = {}
    for sample in gpus:
        if sample.parent_uuid is not None:
            by_parent.setdefault(sample.parent_uuid, []).append(sample)
    found: list[tuple[GpuSample, GpuSample]] = []
    for sample in gpus:
        if sample.parent_uuid is not None:
            continue
        instances = by_parent.get(sample.uuid)
        if instances:
            found.extend((instance, sample) for instance in instances)
        else:
            found.append((sample, sample))
    return found


def dcgm_families(gpus: Sequence[GpuSample], hostname: str) -> list[Metric]:
    """The GPU families, in dcgm-exporter's names, units and labels."""
    entities = [(entity, gpu, _labels(entity, hostname)) for entity, gpu in _entities(gpus)]
    families = []
    for field in DCGM_FIELDS:
        family = Metric(field.name, field.help, field.type)
        for entity, gpu, labels in entities:
            value = field.value(gpu if field.of_gpu else entity)
            if value is not None:
                family.add_sample(field.name, labels, float(value))
        families.append(family)
    return families


def device_id(hostname: str, index: int) -> str:
    """The seed documents' GPU name: ``worker-01-GPU-00``."""
    return f"{hostname}-GPU-{index:02d}"


def seed_model(key: str) -> str:
    """The seed documents' model name: the catalogue's key with underscores (``H100_80GB``)."""
    return key.replace("-", "_")


def seed_families(snapshot: MetricsSnapshot, hostname: str) -> list[Metric]:
    """``gpu_utilization``, ``gpu_temperature`` and ``mig_allocation_ratio``, as the
    seed documents name them (``gpu_hourly_cost`` comes with costs)."""
    util = Metric("gpu_utilization", "GPU utilization (percent).", "gauge")
    temp = Metric("gpu_temperature", "GPU temperature (degrees Celsius).", "gauge")
    for sample in snapshot.gpus:
        if sample.is_mig:
            continue
        name = device_id(hostname, sample.index)
        model = find_model(sample.model)
        percent = sample.util_percent
        if percent is None and sample.gr_engine_active is not None:
            percent = 100.0 * sample.gr_engine_active  # a MIG GPU: its engine activity
        if percent is not None:
            util.add_sample(
                "gpu_utilization",
                {"device_id": name, "model": seed_model(model.key if model else sample.model)},
                round(float(percent), 3),
            )
        if sample.temperature_c is not None:
            temp.add_sample("gpu_temperature", {"device_id": name}, float(sample.temperature_c))
    ratio = Metric(
        "mig_allocation_ratio",
        "Of the MIG instances of a profile held or grantable now, the share held (0-1).",
        "gauge",
    )
    for profile, value in sorted(snapshot.mig_allocation.items()):
        ratio.add_sample("mig_allocation_ratio", {"profile": profile}, float(value))
    return [util, temp, ratio]


def session_families(snapshot: MetricsSnapshot) -> list[Metric]:
    """Who holds what, how active each session is, and sessions by status."""
    info = Metric(
        "sandman_session_info",
        "An active session with its owner, charge and device (one series per device).",
        "gauge",
    )
    active = Metric(
        "sandman_session_gpu_active",
        "The session's GPU engine activity over the last interval (0-1); on simulated "
        "GPUs its container's CPU activity.",
        "gauge",
    )
    cpu = Metric(
        "sandman_session_cpu_percent",
        "The session container's CPU use over the last interval, in percent of one core.",
        "gauge",
    )
    for holder in snapshot.holders:
        base = {
            "session": holder.session_id,
            "user": holder.user_id,
            "team": holder.team or "",
            "project": holder.project or "",
            "image": holder.image,
        }
        for device in holder.devices or (None,):
            labels = dict(base)
            labels["UUID"] = device.gpu_uuid if device else ""
            labels["GPU_I_ID"] = (
                str(device.gpu_instance_id) if device and device.gpu_instance_id is not None else ""
            )
            labels["GPU_I_PROFILE"] = (device.mig_profile or "") if device else ""
            info.add_sample("sandman_session_info", labels, 1.0)
        measured = snapshot.sessions.get(holder.session_id)
        if measured is None:
            continue
        who = {"session": holder.session_id, "user": holder.user_id}
        if measured.gpu_active is not None:
            active.add_sample("sandman_session_gpu_active", who, measured.gpu_active)
        if measured.cpu_percent is not None:
            cpu.add_sample("sandman_session_cpu_percent", who, measured.cpu_percent)
    sessions = Metric("sandman_sessions", "Sessions holding resources, by status.", "gauge")
    for status in sorted(ACTIVE_STATUSES):
        count = snapshot.sessions_by_status.get(status.value, 0)
        sessions.add_sample("sandman_sessions", {"status": status.value}, float(count))
    return [info, active, cpu, sessions]


def collector_families(snapshot: MetricsSnapshot) -> list[Metric]:
    """When the collector last finished and how long it took: an alert's evidence
    that measurements went stale."""
    took = Metric(
        "sandman_metrics_collect_seconds", "How long the last collection pass took.", "gauge"
    )
    took.add_sample("sandman_metrics_collect_seconds", {}, snapshot.collect_seconds)
    last = Metric(
        "sandman_metrics_collected_timestamp_seconds",
        "When the last collection pass finished (Unix time).",
        "gauge",
    )
    last.add_sample("sandman_metrics_collected_timestamp_seconds", {}, snapshot.at.timestamp())
    return [took, last]


def snapshot_families(snapshot: MetricsSnapshot, hostname: str) -> Iterable[Metric]:
    """Everything a snapshot says, in the order ``/metrics`` lists it."""
    return [
        *dcgm_families(snapshot.gpus, hostname),
        *seed_families(snapshot, hostname),
        *session_families(snapshot),
        *collector_families(snapshot),
    ]
