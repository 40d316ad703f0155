"""Plausible measurements of simulated GPUs (pure).

A simulated GPU has no counters, so its samples are made from what Sandman
knows: the devices the inventory reports and how active the session holding
each device is (``observe.measure.simulated_activity``: its container's CPU).
An idle device reads as an idle GPU does (a little frame buffer, room-temperature
heat, idle power, the ``GpuIdle`` clock reason); a busy one fills memory, heats
up and draws power towards its limit. The shapes follow NVML's: a MIG-enabled
GPU reports no utilisation of its own (NVML answers "not supported"), its
instances report their memory and engine activity, and temperature and power
belong to the GPU only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime

from sandman.gpu.catalogue import find_model
from sandman.gpu.types import GpuDevice, MigMode
from sandman.observe.samples import GpuSample

__all__ = ["GPU_IDLE_REASON", "pci_bus_id", "simulated_samples"]

GPU_IDLE_REASON = 0x1  # nvmlClocksEventReasonGpuIdle
IDLE_TEMPERATURE_C = 31.0
BUSY_HEATING_C = 45.0  # degrees above idle at full activity
IDLE_POWER_SHARE = 0.12  # of the power limit
HELD_MEMORY_SHARE = 0.02  # a process holding a device keeps its context in memory
BUSY_MEMORY_SHARE = 0.6  # of the device's memory, at full activity
COPY_SHARE = 0.3  # memory copy utilisation per unit of engine activity


def pci_bus_id(index: int) -> str:
    """A PCI address in NVML's form for the simulated GPU at ``index``."""
    return f"00000000:{0x18 + index:02X}:00.0"


def _wave(index: int, at: datetime) -> float:
    """A slow, small wobble per GPU so that idle graphs are not flat lines."""
    return math.sin(index * 1.7 + at.timestamp() / 30.0)


def _used_mib(memory_mib: float, active: float | None) -> float:
    if active is None:
        return 0.0
    return round(memory_mib * (HELD_MEMORY_SHARE + BUSY_MEMORY_SHARE * active), 1)


def simulated_samples(
    devices: Iterable[GpuDevice], activity: Mapping[str, float], at: datetime
) -> list[GpuSample]:
    """One sample per GPU, then one per MIG instance of it.

    ``activity`` maps a device UUID (GPU or MIG instance) to 0-1; a device missing
    from it is held by no measured session: idle, its frame buffer empty.
    """
    found: list[GpuSample] = []
    for device in devices:
        model = find_model(device.model)
        total_slices = max((p.compute_slices for p in model.profiles), default=1) if model else 1
        instances: list[GpuSample] = []
        weighted = 0.0
        for inst in device.instances:
            active = activity.get(inst.uuid)
            p = model.profile(inst.profile) if model else None
            weighted += (active or 0.0) * (p.compute_slices if p else 1)
            used = _used_mib(inst.memory_mb, active)
            instances.append(
                GpuSample(
                    uuid=inst.uuid,
                    parent_uuid=device.uuid,
                    index=device.index,
                    model=device.name,
                    mig_profile=inst.profile,
                    gpu_instance_id=inst.gpu_instance_id,
                    util_percent=None,
                    mem_copy_util_percent=None,
                    fb_used_mib=used,
                    fb_free_mib=max(0.0, inst.memory_mb - used),
                    temperature_c=None,
                    power_w=None,
                    gr_engine_active=round(active or 0.0, 4),
                    at=at,
                    simulated=True,
                    pci_bus_id=pci_bus_id(device.index),
                )
            )
        mig = device.mig_mode is not MigMode.DISABLED
        if mig:
            active_gpu = min(1.0, weighted / total_slices)
            used_gpu = sum(s.fb_used_mib for s in instances)
        else:
            held = activity.get(device.uuid)
            active_gpu = held or 0.0
            used_gpu = _used_mib(device.memory_total_mb, held)
        wave = _wave(device.index, at)
        idle_w = device.power_limit_w * IDLE_POWER_SHARE
        found.append(
            GpuSample(
                uuid=device.uuid,
                parent_uuid=None,
                index=device.index,
                model=device.name,
                mig_profile=None,
                gpu_instance_id=None,
                util_percent=None if mig else round(100 * active_gpu, 1),
                mem_copy_util_percent=None if mig else round(100 * COPY_SHARE * active_gpu, 1),
                fb_used_mib=used_gpu,
                fb_free_mib=max(0.0, device.memory_total_mb - used_gpu),
                temperature_c=round(IDLE_TEMPERATURE_C + BUSY_HEATING_C * active_gpu + wave, 1),
                power_w=round(idle_w + (device.power_limit_w - idle_w) * active_gpu, 1),
                throttle_reasons=GPU_IDLE_REASON if active_gpu < 0.01 else 0,
                gr_engine_active=round(active_gpu, 4),
                at=at,
                simulated=True,
                pci_bus_id=pci_bus_id(device.index),
            )
        )
        found.extend(instances)
    return found
