"""The metrics history: one-minute averages, their rows, pruning and windows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandman.errors import InvalidRequest
from sandman.observe.history import MAX_WINDOW, MinuteAverages, Point, window
from sandman.observe.history_store import MetricHistory
from sandman.observe.samples import (
    GpuSample,
    HeldDevice,
    MetricsSnapshot,
    SessionActivity,
    SessionInfo,
)
from sandman.store.database import Database

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _gpu(at: datetime, util: float, temp: float) -> GpuSample:
    return GpuSample(
        uuid="GPU-1", parent_uuid=None, index=0, model="m", mig_profile=None,
        gpu_instance_id=None, util_percent=util, mem_copy_util_percent=None, fb_used_mib=100.0,
        fb_free_mib=900.0, temperature_c=temp, power_w=50.0, gr_engine_active=util / 100, at=at,
    )  # fmt: skip


def _snapshot(at: datetime, util: float, cpu: float | None) -> MetricsSnapshot:
    holder = SessionInfo("s-1", "alice", "running", "img", devices=(HeldDevice("GPU-1", "GPU-1"),))
    return MetricsSnapshot(
        at=at,
        gpus=(_gpu(at, util, 40 + util / 10),),
        sessions={"s-1": SessionActivity("s-1", util / 100, cpu, at)},
        holders=(holder,),
    )


def test_a_minute_is_the_mean_of_its_samples_and_is_handed_out_once_over() -> None:
    averages = MinuteAverages()
    for second, util, cpu in (
        (0, 10.0, None),
        (15, 20.0, 50.0),
        (30, 30.0, 70.0),
        (45, 40.0, None),
    ):
        averages.add(_snapshot(T0 + timedelta(seconds=second), util, cpu))
    assert averages.completed(T0 + timedelta(seconds=59)) == []  # the minute is still open
    averages.add(_snapshot(T0 + timedelta(minutes=1), 90.0, 10.0))
    done = {p.kind: p for p in averages.completed(T0 + timedelta(minutes=1))}
    assert done["gpu"] == Point(
        "gpu", "GPU-1", T0, samples=4, gpu_util=25.0, gpu_active=0.25, fb_used_mib=100.0,
        temperature_c=42.5, power_w=50.0,
    )  # fmt: skip
    session = done["session"]
    assert (session.key, session.samples, session.gpu_active) == ("s-1", 4, 0.25)
    assert session.cpu_percent == 60.0  # the mean of what was measured; None is no sample
    assert session.gpu_util == 25.0 and session.fb_used_mib == 100.0
    assert session.temperature_c is None
    assert [p.minute for p in averages.pending()] == [T0 + timedelta(minutes=1)] * 2


@pytest.fixture
def history(tmp_path: Path) -> MetricHistory:
    db = Database(f"sqlite:///{tmp_path / 'h.db'}")
    db.migrate()
    return MetricHistory(db, timedelta(days=30), clock=lambda: T0 + timedelta(days=31))


def test_rows_are_written_as_minutes_close_and_read_back(history: MetricHistory) -> None:
    for minute in range(3):
        for second in (0, 30):
            history.record(
                _snapshot(T0 + timedelta(minutes=minute, seconds=second), 10.0 * minute, 5.0)
            )
    points = history.points("gpu", "GPU-1", T0, T0 + timedelta(hours=1))
    assert [(p.minute, p.gpu_util, p.samples) for p in points] == [
        (T0, 0.0, 2),
        (T0 + timedelta(minutes=1), 10.0, 2),
    ]  # the third minute is still open
    history.flush()
    points = history.points("session", "s-1", T0, T0 + timedelta(hours=1))
    assert [p.gpu_active for p in points] == [0.0, 0.1, 0.2]
    assert history.points(
        "session", "s-1", T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)
    ) == [points[1]]


def test_pruning_keeps_the_retention(history: MetricHistory) -> None:
    old, recent = T0, T0 + timedelta(days=2)
    history.write([Point("gpu", "GPU-1", old, 1, gpu_util=1.0), Point("gpu", "GPU-1", recent, 1)])
    assert history.prune() == 1  # the clock says 31 days after T0; 30 are kept
    left = history.points("gpu", "GPU-1", T0 - timedelta(days=1), T0 + timedelta(days=3))
    assert [p.minute for p in left] == [recent]
    assert history.prune() == 0


def test_a_minute_written_twice_is_replaced(history: MetricHistory) -> None:
    history.write([Point("gpu", "GPU-1", T0, 1, gpu_util=1.0)])
    history.write([Point("gpu", "GPU-1", T0, 4, gpu_util=2.0)])
    (point,) = history.points("gpu", "GPU-1", T0, T0 + timedelta(minutes=1))
    assert (point.samples, point.gpu_util) == (4, 2.0)


def test_windows() -> None:
    now = T0
    assert window(None, None, now) == (now - timedelta(hours=24), now)
    naive = datetime(2026, 5, 1, 11, 0)
    assert window(naive, None, now) == (naive.replace(tzinfo=UTC), now)
    with pytest.raises(InvalidRequest, match="must be before"):
        window(now, now, now)
    with pytest.raises(InvalidRequest, match="at most 7 days"):
        window(now - MAX_WINDOW - timedelta(minutes=1), now, now)
    with pytest.raises(InvalidRequest):
        window(None, datetime(1, 1, 1, tzinfo=UTC), now)  # a day before year 1
