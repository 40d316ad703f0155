"""A GPU Sandman cannot see is never held against a session: where the cluster
places sessions (Kubernetes) and no source reads their GPUs, a session holding a
GPU is kept with the reason and never warned; once its GPU is seen, an idle
stretch starts from then. Sessions without a GPU are reclaimed as before."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from tests.unit.observe.idle.conftest import FakeMetrics, Told, start
from tests.unit.services.conftest import START, Clock

from sandman.domain import SessionStatus
from sandman.gpu.types import GpuRequest
from sandman.observe.idle import Activity, IdlePolicy, Keep, Reclaim, Warn, decide
from sandman.observe.idle_activity import ActivityTracker
from sandman.observe.idle_sweep import UNMEASURED, IdleReclaim
from sandman.observe.prometheus_gpu import NO_SOURCE
from sandman.observe.samples import SessionActivity
from sandman.services.requests import SessionRequest
from sandman.services.sessions import SessionService

T0 = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)
HOUR = IdlePolicy(timeout=3600, warnings=(900, 120))


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# ------------------------------------------------------------------ the rule
def test_a_gpu_session_whose_gpu_is_unknown_is_kept_and_never_warned() -> None:
    blind = Activity(watched_since=T0, has_gpu=True, cpu_percent=0.0, gpu_unknown=NO_SOURCE)
    for minute in (0, 45, 58, 60, 600, 10_000):
        assert decide(blind, HOUR, None, at(minute)) == Keep(
            None,
            held="GPU activity unknown: no GPU metrics source on Kubernetes; "
            "set SANDMAN_GPU_METRICS_PROMETHEUS",
        )
    assert decide(blind, IdlePolicy(timeout=0), None, at(600)) == Keep(None)  # reclaim off


def test_without_a_gpu_the_unknown_gpu_does_not_matter() -> None:
    cpu_only = Activity(watched_since=T0, has_gpu=False, gpu_unknown=NO_SOURCE, gpu_unseen=at(30))
    assert isinstance(decide(cpu_only, HOUR, None, at(45)), Warn)
    assert decide(cpu_only, HOUR, None, at(60)) == Reclaim(T0)  # gpu_unseen not counted


def test_an_idle_stretch_starts_once_the_gpu_is_seen() -> None:
    seen = Activity(watched_since=T0, has_gpu=True, gpu_percent=0.0, gpu_unseen=at(100))
    assert seen.last_busy(at(120)) == at(100)
    assert decide(seen, HOUR, None, at(140)) == Keep(at(160))
    assert decide(seen, HOUR, None, at(160)) == Reclaim(at(100))
    assert seen.last_busy(at(50)) == at(50)  # an unseen moment ahead of the clock is now


# ------------------------------------------------------------------ the tracker
def test_the_tracker_keeps_why_the_gpu_is_unknown() -> None:
    tracker = ActivityTracker(cpu_percent=5, gpu_percent=5)
    tracker.record_sample("s", None, at(0))  # no figure, nothing said: no GPU evidence
    assert tracker.activity("s", None, True, at(0)).gpu_unknown is None
    tracker.record_sample("s", None, at(1), unmeasured="not measured yet")
    activity = tracker.activity("s", None, True, at(1))
    assert activity.gpu_unknown == "not measured yet" and activity.gpu_unseen == at(1)
    sample = SessionActivity("s", None, 0.0, at(2), gpu_unknown="no series for pod p")
    tracker.record_sample("s", SessionActivity("s", 0.5, 0.0, at(2)), at(2))
    tracker.record_sample("s", sample, at(3))
    activity = tracker.activity("s", None, True, at(3))
    assert activity.gpu_unknown == "no series for pod p" and activity.gpu_unseen == at(3)
    assert activity.gpu_percent is None  # the earlier reading is not shown as current
    tracker.record_sample("s", SessionActivity("s", 0.0, 0.0, at(4)), at(4))
    activity = tracker.activity("s", None, True, at(4))
    assert activity.gpu_unknown is None and activity.gpu_percent == 0.0
    assert activity.last_busy(at(10)) == at(3)  # the last moment it was not seen


# ------------------------------------------------------------------ the sweep
@pytest.fixture
def on_kubernetes(
    service: SessionService, metrics: FakeMetrics, told: Told, monkeypatch: pytest.MonkeyPatch
) -> IdleReclaim:
    """Idle reclaim where the cluster, not Sandman, places each session's GPU."""
    monkeypatch.setattr(service.inventory, "backend", "kubernetes")
    idle = IdleReclaim(service, activity=metrics)
    idle.notifiers.append(told)
    return idle


def sweep_at(reclaim: IdleReclaim, clock: Clock, minute: float) -> list[str]:
    clock.now = START + timedelta(minutes=minute)
    return reclaim.sweep()


def test_on_kubernetes_without_a_source_gpu_sessions_stay_and_cpu_only_ones_go(
    service: SessionService,
    on_kubernetes: IdleReclaim,
    metrics: FakeMetrics,
    clock: Clock,
    told: Told,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gpu = start(service, "alice")
    assert gpu.gpu_uuid
    request = SessionRequest(user_id="bob", ttl_minutes=600, gpu=GpuRequest(gpu_count=0))
    cpu_only = service.create(request).session
    assert not cpu_only.gpu_uuid
    assert on_kubernetes.gpu_unmeasured == UNMEASURED
    caplog.set_level(logging.INFO, "sandman.observe.idle_sweep")
    reclaimed: list[str] = []
    for minute in range(0, 241, 5):
        clock.now = START + timedelta(minutes=minute)
        # The collector's pass: the GPU session's activity unknown, as with no source.
        metrics.samples[gpu.id] = SessionActivity(gpu.id, None, 0.0, clock.now, NO_SOURCE)
        metrics.samples[cpu_only.id] = SessionActivity(cpu_only.id, None, 0.0, clock.now)
        reclaimed += on_kubernetes.sweep()
    assert reclaimed == [cpu_only.id]
    assert service.get(cpu_only.id).status == SessionStatus.IDLE
    assert service.get(gpu.id).status == SessionStatus.RUNNING
    assert told.subjects(gpu.id) == []  # no warning of a reclaim that will not come
    held = [r.getMessage() for r in caplog.records if "is not reclaimed as idle" in r.getMessage()]
    assert held == [
        f"session {gpu.id} of alice is not reclaimed as idle: GPU activity unknown: "
        "no GPU metrics source on Kubernetes; set SANDMAN_GPU_METRICS_PROMETHEUS"
    ]  # once, not every sweep


def test_on_kubernetes_no_figure_at_all_is_unknown_too(
    service: SessionService, on_kubernetes: IdleReclaim, clock: Clock, told: Told
) -> None:
    """The collector has not measured the session (not run yet, or failed): kept."""
    row = start(service, "carl")
    for minute in range(0, 181, 10):
        assert sweep_at(on_kubernetes, clock, minute) == []
    assert service.get(row.id).status == SessionStatus.RUNNING
    assert told.notices == []


def test_on_kubernetes_once_the_gpu_is_seen_idle_it_is_reclaimed_a_timeout_later(
    service: SessionService,
    on_kubernetes: IdleReclaim,
    metrics: FakeMetrics,
    clock: Clock,
    told: Told,
) -> None:
    row = start(service, "dana")
    for minute in range(0, 121, 10):  # two hours unknown
        clock.now = START + timedelta(minutes=minute)
        metrics.samples[row.id] = SessionActivity(row.id, None, 0.0, clock.now, "no series")
        assert on_kubernetes.sweep() == []
    for minute in range(125, 180, 5):  # then seen, and idle, from minute 120 on
        clock.now = START + timedelta(minutes=minute)
        metrics.samples[row.id] = SessionActivity(row.id, 0.01, 0.0, clock.now)
        assert on_kubernetes.sweep() == []
    assert told.subjects(row.id) == [f"Sandman session {row.id} is idle: reclaimed in 15 min"]
    assert sweep_at(on_kubernetes, clock, 180) == [row.id]
    assert service.get(row.id).end_reason == (
        "idle for 60 min (no SSH traffic for 3 h, GPU 1.0%, CPU 0%); idle timeout 60 min"
    )


def test_on_docker_a_gpu_session_without_a_figure_goes_as_before(
    service: SessionService, reclaim: IdleReclaim, clock: Clock
) -> None:
    row = start(service, "erin")
    assert reclaim.gpu_unmeasured is None
    for minute in range(0, 61, 10):
        sweep_at(reclaim, clock, minute)
    assert service.get(row.id).status == SessionStatus.IDLE
