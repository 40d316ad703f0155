"""How busy a session is, from counters the engine and the GPUs report (pure).

CPU: the engine reports a container's cumulative CPU time; two readings one
interval apart give the share of one core used over that interval (100 = one
core busy the whole time). Averaging over the whole collection interval, rather
than the engine's own one-second window, is what idle decisions want: a burst
between two readings still counts.

GPU: a session's activity is the graphics/compute engine activity (0-1) of the
device it holds, the mean over its devices when it holds several. On simulated
GPUs there is no engine to measure, so a simulated device is as active as the
CPU of the session holding it: one busy core makes its GPU fully active. Demos
and tests then see GPU activity, idleness and history that follow what the user
really does in the container.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sandman.observe.samples import GpuSample, SessionInfo

__all__ = [
    "CpuReading",
    "cpu_percent",
    "session_gpu_active",
    "simulated_activity",
]


@dataclass(frozen=True)
class CpuReading:
    """A container's cumulative CPU time (seconds) read at ``at`` (monotonic seconds)."""

    cpu_seconds: float
    at: float


def cpu_percent(before: CpuReading | None, after: CpuReading | None) -> float | None:
    """CPU used between two readings, in percent of one core; None when it cannot tell
    (no earlier reading, no time between them, or the counter went back: a restart)."""
    if before is None or after is None:
        return None
    elapsed = after.at - before.at
    used = after.cpu_seconds - before.cpu_seconds
    if elapsed <= 0 or used < 0:
        return None
    return 100.0 * used / elapsed


def simulated_activity(
    holders: Iterable[SessionInfo], cpu: Mapping[str, float | None]
) -> dict[str, float]:
    """Device UUID -> activity (0-1) of simulated GPUs: the CPU share of the session
    holding it, one core = fully active. Devices nobody holds are idle (absent)."""
    found: dict[str, float] = {}
    for holder in holders:
        percent = cpu.get(holder.session_id)
        if percent is None:
            continue
        active = min(1.0, max(0.0, percent / 100.0))
        for device in holder.devices:
            found[device.uuid] = active
    return found


def session_gpu_active(holder: SessionInfo, samples: Mapping[str, GpuSample]) -> float | None:
    """The mean engine activity of the devices ``holder`` holds; None when it holds
    none or none of them reports activity (a MIG instance on a GPU without GPM)."""
    values = [
        sample.gr_engine_active
        for device in holder.devices
        if (sample := samples.get(device.uuid)) is not None and sample.gr_engine_active is not None
    ]
    return sum(values) / len(values) if values else None
