"""The anomaly detectors on synthetic series, and the periodic check that tells each
finding once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sandman.gpu.catalogue import resolve_model
from sandman.observe.anomalies import (
    AnomalyCheck,
    covering,
    fast_heaters,
    hung_job,
    slope_per_minute,
    smaller_slice,
)
from sandman.observe.samples import GpuSample, HeldDevice, MetricsSnapshot, SessionInfo

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
A100 = resolve_model("A100-SXM4-40GB")


def series(minutes: int, value: Any, step: int = 1) -> list[tuple[datetime, float]]:
    """One point every ``step`` minutes over the last ``minutes``; ``value`` a number
    or a function of the minute index (0 = oldest)."""
    count = minutes // step + 1
    return [
        (NOW - timedelta(minutes=minutes - i * step), value(i) if callable(value) else value)
        for i in range(count)
    ]


def test_covering_wants_the_whole_window() -> None:
    assert covering(series(30, 1.0), NOW - timedelta(minutes=30))
    assert covering(series(20, 1.0), NOW - timedelta(minutes=30)) is None  # starts late
    gappy = [p for i, p in enumerate(series(30, 1.0)) if not 10 <= i <= 20]
    assert covering(gappy, NOW - timedelta(minutes=30)) is None


def test_a_hung_job_keeps_memory_full_and_does_nothing() -> None:
    assert hung_job(series(40, 0.97), series(40, 0.0), NOW)
    assert not hung_job(series(40, 0.97), series(40, lambda i: 0.3 if i == 35 else 0.0), NOW)
    assert not hung_job(series(40, 0.5), series(40, 0.0), NOW)  # memory not full: idle
    assert not hung_job(series(20, 0.97), series(20, 0.0), NOW)  # not long enough yet


def test_a_mostly_idle_3g_slice_would_fit_a_1g() -> None:
    three_days = 3 * 24 * 60
    activity = series(three_days, lambda i: 0.2 if i % 120 == 0 else 0.02, step=5)
    memory = series(three_days, 3000.0, step=5)  # MiB
    found = smaller_slice(A100, "3g.20gb", activity, memory, NOW)
    assert found is not None and found.name == "1g.5gb"


def test_memory_decides_too() -> None:
    three_days = 3 * 24 * 60
    activity = series(three_days, 0.05, step=5)
    found = smaller_slice(A100, "7g.40gb", activity, series(three_days, 9000.0, step=5), NOW)
    # one compute slice would do, but 9000 MiB with headroom needs 20 GB
    assert found is not None and found.name == "3g.20gb"


def test_a_busy_slice_or_a_short_history_gets_no_suggestion() -> None:
    three_days = 3 * 24 * 60
    busy = series(three_days, 0.9, step=5)
    assert smaller_slice(A100, "3g.20gb", busy, series(three_days, 3000.0, step=5), NOW) is None
    short = series(24 * 60, 0.01, step=5)
    assert smaller_slice(A100, "3g.20gb", short, series(24 * 60, 100.0, step=5), NOW) is None
    idle = series(three_days, 0.0, step=5)
    tiny = series(three_days, 100.0, step=5)
    assert smaller_slice(A100, "1g.5gb", idle, tiny, NOW) is None  # nothing smaller


def test_a_whole_gpu_hardly_used_is_offered_a_slice() -> None:
    three_days = 3 * 24 * 60
    found = smaller_slice(
        A100, None, series(three_days, 0.1, step=5), series(three_days, 6000.0, step=5), NOW
    )
    assert found is not None and found.name == "1g.10gb"  # 7500 MiB with headroom


def test_slope() -> None:
    assert slope_per_minute(series(10, lambda i: 40 + 0.5 * i)) == pytest.approx(0.5)
    assert slope_per_minute(series(1, 40.0)) is None


def test_a_gpu_heating_faster_than_its_siblings_under_the_same_load() -> None:
    steady = series(15, lambda i: 60 + 0.1 * i)
    hot = series(15, lambda i: 60 + 1.0 * i)
    temps = {"GPU-0": steady, "GPU-1": steady, "GPU-2": hot, "GPU-3": hot}
    loads = {"GPU-0": series(15, 90.0), "GPU-1": series(15, 85.0), "GPU-2": series(15, 88.0)}
    loads["GPU-3"] = series(15, 10.0)  # no sibling under a similar load: no comparison
    [found] = fast_heaters(temps, loads, NOW)
    assert found.gpu_uuid == "GPU-2"
    assert found.rate == pytest.approx(1.0) and found.siblings_rate == pytest.approx(0.1)


def test_all_heating_together_is_not_one_gpus_fault() -> None:
    rising = series(15, lambda i: 50 + 1.0 * i)
    temps = {f"GPU-{n}": rising for n in range(4)}
    loads = {f"GPU-{n}": series(15, 95.0) for n in range(4)}
    assert fast_heaters(temps, loads, NOW) == []


@dataclass
class FakeHistory:
    by_key: dict[tuple[str, str], list[Any]]

    def points(self, kind: str, key: str, since: datetime, until: datetime) -> list[Any]:
        return [p for p in self.by_key.get((kind, key), []) if since <= p.minute < until]


@dataclass(frozen=True)
class Minute:
    minute: datetime
    gpu_active: float | None = None
    fb_used_mib: float | None = None
    temperature_c: float | None = None
    gpu_util: float | None = None


def test_the_check_tells_the_user_once() -> None:
    mig = GpuSample(
        uuid="MIG-1", parent_uuid="GPU-0", index=0, model="NVIDIA A100-SXM4-40GB",
        mig_profile="3g.20gb", gpu_instance_id=2, util_percent=None,
        mem_copy_util_percent=None, fb_used_mib=19000.0, fb_free_mib=500.0,
        temperature_c=50.0, power_w=100.0,
    )  # fmt: skip
    holder = SessionInfo(
        "s-1", "alice", "running", "img", devices=(HeldDevice("MIG-1", "GPU-0", 2, "3g.20gb"),)
    )
    snapshot = MetricsSnapshot(at=NOW, gpus=(mig,), holders=(holder,))
    minutes = [
        Minute(NOW - timedelta(minutes=m), gpu_active=0.0, fb_used_mib=19000.0)
        for m in range(40, 0, -1)
    ]
    told: list[tuple[str, ...]] = []
    check = AnomalyCheck(
        lambda: snapshot,
        FakeHistory({("session", "s-1"): minutes}),
        lambda user, session, subject, text: told.append((user, session, subject)),
        lambda subject, text: told.append(("admins", subject)),
        clock=lambda: NOW,
    )
    assert check.run_once() == 1
    assert told == [("alice", "s-1", "Your GPU job may be hung")]
    assert check.run_once() == 0  # told once a day at most
