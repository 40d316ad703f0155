"""The pure decisions of the reaper and the reconciler."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sandman.gpu.types import GpuDevice, MigInstance, MigMode
from sandman.runtime.base import SESSION_LABEL, ContainerState
from sandman.services.reaper import expired
from sandman.services.reconciler import container_verdict, orphan_instances
from sandman.store.models import GpuClaim
from sandman.store.models import Session as SessionRow

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def _row(status: str, expires_in: timedelta) -> SessionRow:
    return SessionRow(id=status + str(expires_in), status=status, expires_at=NOW + expires_in)


def test_expired_picks_only_active_sessions_past_their_ttl() -> None:
    rows = [
        _row("running", timedelta(seconds=-1)),
        _row("running", timedelta(seconds=0)),
        _row("running", timedelta(seconds=1)),
        _row("starting", timedelta(minutes=-5)),
        _row("stopping", timedelta(minutes=-5)),
        _row("deleted", timedelta(minutes=-5)),
    ]
    assert [r.id for r in expired(rows, NOW)] == [rows[0].id, rows[1].id, rows[3].id]


def test_container_verdicts() -> None:
    row = _row("running", timedelta(minutes=5))
    ours = {SESSION_LABEL: row.id}
    alive = ContainerState("c1", "n", ours, running=True, status="running")
    dead = ContainerState("c1", "n", ours, running=False, status="exited", exit_code=137)
    assert container_verdict(row, alive) is None
    assert "vanished" in (container_verdict(row, None) or "")
    assert "137" in (container_verdict(row, dead) or "")
    # a container of the same name that another session started is not this one's
    other = ContainerState("c2", "n", {SESSION_LABEL: "other"}, running=True, status="running")
    assert "vanished" in (container_verdict(row, other) or "")


def _device(mode: MigMode, *instances: MigInstance) -> GpuDevice:
    return GpuDevice(
        index=0, uuid="GPU-1", name="NVIDIA A100-SXM4-40GB", model="A100-40GB",
        memory_total_mb=40960, memory_used_mb=0, utilization_percent=0, temperature_c=30,
        power_usage_w=50, power_limit_w=400, mig_mode=mode, instances=instances,
    )  # fmt: skip


def test_orphans_are_uncovered_instances_on_dynamic_gpus_only() -> None:
    held = MigInstance("MIG-held", "1g.5gb", start=0, size=1, memory_mb=4864)
    orphan = MigInstance("MIG-orphan", "2g.10gb", start=2, size=2, memory_mb=9856)
    claims = [GpuClaim(gpu_uuid="GPU-1", unit="slot:0", session_id="s", start=0, size=1)]
    assert orphan_instances([_device(MigMode.DYNAMIC, held, orphan)], claims) == [
        ("GPU-1", "MIG-orphan")
    ]
    # an admin's instances on a static GPU are never destroyed
    assert orphan_instances([_device(MigMode.STATIC, held, orphan)], claims) == []
