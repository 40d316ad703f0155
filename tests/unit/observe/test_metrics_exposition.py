"""Snapshots rendered as Prometheus families: dcgm-exporter's names, units and
labels, the seed documents' names, and who holds what."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from sandman.observe.exposition import (
    DCGM_FIELDS,
    dcgm_families,
    seed_families,
    session_families,
    snapshot_families,
)
from sandman.observe.samples import (
    GpuSample,
    HeldDevice,
    MetricsSnapshot,
    SessionActivity,
    SessionInfo,
)

AT = datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC)
H100 = "GPU-11111111-2222-3333-4444-555555555555"
RTX = "GPU-66666666-7777-8888-9999-000000000000"
MIG = "MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"

WHOLE = GpuSample(
    uuid=RTX, parent_uuid=None, index=1, model="NVIDIA GeForce RTX 4090", mig_profile=None,
    gpu_instance_id=None, util_percent=42.0, mem_copy_util_percent=7.0, fb_used_mib=2048.0,
    fb_free_mib=22516.0, temperature_c=61.0, power_w=230.5, xid=79, ecc_dbe=2,
    throttle_reasons=0x4, gr_engine_active=0.42, at=AT, pci_bus_id="00000000:19:00.0",
)  # fmt: skip
MIG_GPU = GpuSample(
    uuid=H100, parent_uuid=None, index=0, model="NVIDIA H100 80GB HBM3", mig_profile=None,
    gpu_instance_id=None, util_percent=None, mem_copy_util_percent=None, fb_used_mib=9000.0,
    fb_free_mib=72000.0, temperature_c=48.0, power_w=180.0, xid=0, ecc_dbe=0,
    throttle_reasons=0, gr_engine_active=0.1, at=AT, pci_bus_id="00000000:18:00.0",
)  # fmt: skip
INSTANCE = GpuSample(
    uuid=MIG, parent_uuid=H100, index=0, model="NVIDIA H100 80GB HBM3", mig_profile="1g.10gb",
    gpu_instance_id=9, util_percent=None, mem_copy_util_percent=None, fb_used_mib=5000.0,
    fb_free_mib=4800.0, temperature_c=None, power_w=None, gr_engine_active=0.75, at=AT,
    pci_bus_id="00000000:18:00.0",
)  # fmt: skip


def _samples(families: list[Metric], name: str) -> list[tuple[dict[str, str], float]]:
    family = next(f for f in families if f.name == name)
    return [(s.labels, s.value) for s in family.samples]


def test_a_whole_gpu_carries_dcgm_exporters_labels_and_units() -> None:
    families = dcgm_families([WHOLE], "node-1")
    labels = {
        "gpu": "1", "UUID": RTX, "pci_bus_id": "00000000:19:00.0", "device": "nvidia1",
        "modelName": "NVIDIA GeForce RTX 4090", "Hostname": "node-1",
    }  # fmt: skip
    expected = {
        "DCGM_FI_DEV_GPU_UTIL": 42.0,  # percent
        "DCGM_FI_DEV_MEM_COPY_UTIL": 7.0,
        "DCGM_FI_DEV_FB_USED": 2048.0,  # MiB
        "DCGM_FI_DEV_FB_FREE": 22516.0,
        "DCGM_FI_DEV_GPU_TEMP": 61.0,  # degrees C
        "DCGM_FI_DEV_POWER_USAGE": 230.5,  # W
        "DCGM_FI_DEV_XID_ERRORS": 79.0,
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": 2.0,
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": 4.0,
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE": 0.42,  # 0-1
    }
    assert {f.name for f in families} == set(expected) == {f.name for f in DCGM_FIELDS}
    for name, value in expected.items():
        assert _samples(families, name) == [(labels, value)], name


def test_a_mig_gpu_is_reported_through_its_instances() -> None:
    """As dcgm-exporter's default: the instance's own memory and activity, the GPU's
    temperature and power repeated, no utilisation (NVML has none under MIG)."""
    families = dcgm_families([MIG_GPU, INSTANCE], "node-1")
    labels = {
        "gpu": "0", "UUID": H100, "pci_bus_id": "00000000:18:00.0", "device": "nvidia0",
        "modelName": "NVIDIA H100 80GB HBM3", "GPU_I_PROFILE": "1g.10gb", "GPU_I_ID": "9",
        "Hostname": "node-1",
    }  # fmt: skip
    assert _samples(families, "DCGM_FI_PROF_GR_ENGINE_ACTIVE") == [(labels, 0.75)]
    assert _samples(families, "DCGM_FI_DEV_FB_USED") == [(labels, 5000.0)]
    assert _samples(families, "DCGM_FI_DEV_GPU_TEMP") == [(labels, 48.0)]
    assert _samples(families, "DCGM_FI_DEV_POWER_USAGE") == [(labels, 180.0)]
    assert _samples(families, "DCGM_FI_DEV_GPU_UTIL") == []
    assert _samples(families, "DCGM_FI_DEV_MEM_COPY_UTIL") == []


def test_the_text_keeps_dcgm_exporters_exact_names() -> None:
    registry = CollectorRegistry(auto_describe=False)

    class Families:
        def collect(self) -> list[Metric]:
            return dcgm_families([WHOLE], "h")

    registry.register(Families())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert "# TYPE DCGM_FI_DEV_ECC_DBE_VOL_TOTAL untyped\n" in text
    assert "\nDCGM_FI_DEV_ECC_DBE_VOL_TOTAL{" in text
    assert "_total_total" not in text and "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL_total" not in text
    parsed = {f.name for f in text_string_to_metric_families(text)}
    assert "DCGM_FI_PROF_GR_ENGINE_ACTIVE" in parsed


def _snapshot() -> MetricsSnapshot:
    alice = SessionInfo(
        session_id="s-1", user_id="alice", status="running", image="img:1", team="vision",
        project="detr", devices=(HeldDevice(MIG, H100, 9, "1g.10gb"),),
    )  # fmt: skip
    bob = SessionInfo(
        session_id="s-2", user_id="bob", status="running", image="img:1",
        devices=(HeldDevice(RTX, RTX),),
    )  # fmt: skip
    carol = SessionInfo(session_id="s-3", user_id="carol", status="starting", image="img:1")
    return MetricsSnapshot(
        at=AT,
        gpus=(MIG_GPU, INSTANCE, WHOLE),
        sessions={
            "s-1": SessionActivity("s-1", 0.75, 80.0, AT),
            "s-2": SessionActivity("s-2", None, 3.5, AT),
        },
        holders=(alice, bob, carol),
        sessions_by_status={"running": 2, "starting": 1},
        mig_allocation={"1g.10gb": 1 / 7},
    )


def test_who_holds_what_joins_the_gpu_series_on_uuid_and_gpu_instance() -> None:
    families = session_families(_snapshot())
    info = _samples(families, "sandman_session_info")
    assert info == [
        (
            {
                "session": "s-1", "user": "alice", "team": "vision", "project": "detr",
                "image": "img:1", "UUID": H100, "GPU_I_ID": "9", "GPU_I_PROFILE": "1g.10gb",
            },
            1.0,
        ),
        (
            {
                "session": "s-2", "user": "bob", "team": "", "project": "", "image": "img:1",
                "UUID": RTX, "GPU_I_ID": "", "GPU_I_PROFILE": "",
            },
            1.0,
        ),
        (
            {
                "session": "s-3", "user": "carol", "team": "", "project": "", "image": "img:1",
                "UUID": "", "GPU_I_ID": "", "GPU_I_PROFILE": "",
            },
            1.0,
        ),
    ]  # fmt: skip
    # The join keys are exactly what the GPU series carry.
    gpu = dict(
        _samples(dcgm_families([MIG_GPU, INSTANCE], "h"), "DCGM_FI_PROF_GR_ENGINE_ACTIVE")[0][0]
    )
    assert (gpu["UUID"], gpu["GPU_I_ID"]) == (info[0][0]["UUID"], info[0][0]["GPU_I_ID"])
    assert _samples(families, "sandman_session_gpu_active") == [
        ({"session": "s-1", "user": "alice"}, 0.75)
    ]
    assert _samples(families, "sandman_session_cpu_percent") == [
        ({"session": "s-1", "user": "alice"}, 80.0),
        ({"session": "s-2", "user": "bob"}, 3.5),
    ]
    assert _samples(families, "sandman_sessions") == [
        ({"status": "running"}, 2.0),
        ({"status": "starting"}, 1.0),
        ({"status": "stopping"}, 0.0),
    ]


def test_the_seed_documents_names() -> None:
    families = seed_families(_snapshot(), "worker-01")
    assert _samples(families, "gpu_utilization") == [
        ({"device_id": "worker-01-GPU-00", "model": "H100_80GB"}, 10.0),  # MIG: activity
        ({"device_id": "worker-01-GPU-01", "model": "RTX_4090"}, 42.0),
    ]
    assert _samples(families, "gpu_temperature") == [
        ({"device_id": "worker-01-GPU-00"}, 48.0),
        ({"device_id": "worker-01-GPU-01"}, 61.0),
    ]
    assert _samples(families, "mig_allocation_ratio") == [({"profile": "1g.10gb"}, 1 / 7)]


def test_a_whole_snapshot_parses_as_prometheus_text() -> None:
    registry = CollectorRegistry(auto_describe=False)
    snapshot = _snapshot()

    class Families:
        def collect(self) -> list[Metric]:
            return list(snapshot_families(snapshot, "h"))

    registry.register(Families())  # type: ignore[arg-type]
    names = {f.name for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert {
        "DCGM_FI_DEV_GPU_UTIL", "gpu_utilization", "mig_allocation_ratio",
        "sandman_session_info", "sandman_session_gpu_active", "sandman_sessions",
        "sandman_metrics_collect_seconds",
    } <= names  # fmt: skip
