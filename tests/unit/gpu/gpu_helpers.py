"""Helpers shared by the GPU tests: devices built straight from catalogue models."""

from __future__ import annotations

from sandman.gpu.catalogue import resolve_model
from sandman.gpu.types import GpuDevice, MigInstance, MigMode


def device(
    index: int,
    model: str,
    mode: MigMode | None = None,
    instances: tuple[MigInstance, ...] = (),
) -> GpuDevice:
    m = resolve_model(model)
    if mode is None:
        mode = MigMode.DYNAMIC if m.mig_capable else MigMode.DISABLED
    return GpuDevice(
        index=index,
        uuid=f"GPU-{index:08x}-0000-0000-0000-000000000000",
        name=m.display_name,
        model=m.key,
        memory_total_mb=m.memory_mib,
        memory_used_mb=0,
        utilization_percent=0,
        temperature_c=30,
        power_usage_w=50.0,
        power_limit_w=m.power_limit_w,
        mig_mode=mode,
        instances=instances,
    )


def instance(model: str, profile: str, start: int, n: int = 0) -> MigInstance:
    p = resolve_model(model).profile(profile)
    assert p is not None
    return MigInstance(
        uuid=f"MIG-{n:08x}-{start:04x}-0000-0000-000000000000",
        profile=profile,
        start=start,
        size=p.size,
        memory_mb=p.memory_mib,
    )
