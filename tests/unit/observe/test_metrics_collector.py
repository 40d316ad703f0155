"""The collector over a fake runtime: a session's simulated GPU activity follows its
container's CPU, who holds what, MIG allocation, and the pass's cost."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import fake_core

from sandman.core import Sandman
from sandman.domain import SessionStatus
from sandman.gpu.catalogue import resolve_model
from sandman.gpu.types import GpuDevice, GpuRequest, MigInstance, MigMode
from sandman.observe.measure import CpuReading, cpu_percent, simulated_activity
from sandman.observe.samples import HeldDevice, SessionInfo
from sandman.observe.simulated import GPU_IDLE_REASON, simulated_samples
from sandman.services.requests import SessionRequest

AT = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def core(tmp_path: Path, runtime: FakeRuntime) -> Iterator[Sandman]:
    made = fake_core(tmp_path, runtime, gpu_topology="mixed", default_mig_profile=None)
    yield made
    made.stop()


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


def _start(core: Sandman, user: str, gpu: GpuRequest) -> str:
    created = core.sessions.create(SessionRequest(user_id=user, gpu=gpu))
    return created.session.id


def test_cpu_percent_is_of_one_core_over_the_interval() -> None:
    assert cpu_percent(CpuReading(10.0, 100.0), CpuReading(25.0, 110.0)) == 150.0
    assert cpu_percent(None, CpuReading(25.0, 110.0)) is None
    assert cpu_percent(CpuReading(25.0, 100.0), CpuReading(1.0, 110.0)) is None  # restarted
    assert cpu_percent(CpuReading(1.0, 100.0), CpuReading(2.0, 100.0)) is None


def test_simulated_activity_is_the_holders_cpu_capped_at_one_core() -> None:
    holders = [
        SessionInfo("a", "alice", "running", "img", devices=(HeldDevice("MIG-1", "GPU-1", 1),)),
        SessionInfo("b", "bob", "running", "img", devices=(HeldDevice("GPU-2", "GPU-2"),)),
        SessionInfo("c", "carol", "running", "img", devices=(HeldDevice("GPU-3", "GPU-3"),)),
    ]
    found = simulated_activity(holders, {"a": 35.0, "b": 250.0, "c": None})
    assert found == {"MIG-1": 0.35, "GPU-2": 1.0}


def test_simulated_samples_follow_activity() -> None:
    a100 = resolve_model("A100-SXM4-80GB")
    gpu = GpuDevice(
        index=0, uuid="GPU-a", name=a100.display_name, model=a100.key, memory_total_mb=81920,
        memory_used_mb=0, utilization_percent=0, temperature_c=30, power_usage_w=50,
        power_limit_w=400.0, mig_mode=MigMode.DYNAMIC,
        instances=(
            MigInstance("MIG-busy", "3g.40gb", 0, 4, 40192, gpu_instance_id=2),
            MigInstance("MIG-idle", "1g.10gb", 4, 1, 9728, gpu_instance_id=7),
        ),
    )  # fmt: skip
    busy, idle = simulated_samples([gpu], {"MIG-busy": 1.0}, AT), simulated_samples([gpu], {}, AT)
    by = {s.uuid: s for s in busy}
    assert by["MIG-busy"].gr_engine_active == 1.0 and by["MIG-idle"].gr_engine_active == 0.0
    assert by["MIG-busy"].fb_used_mib > 0.5 * 40192 and by["MIG-idle"].fb_used_mib == 0
    assert by["GPU-a"].gr_engine_active == pytest.approx(3 / 7, abs=1e-3)  # slices: 3 of 7
    assert by["GPU-a"].util_percent is None  # NVML reports none under MIG
    quiet = {s.uuid: s for s in idle}["GPU-a"]
    assert by["GPU-a"].temperature_c > quiet.temperature_c + 15  # type: ignore[operator]
    assert by["GPU-a"].power_w > quiet.power_w  # type: ignore[operator]
    assert quiet.throttle_reasons == GPU_IDLE_REASON and by["GPU-a"].throttle_reasons == 0
    assert by["MIG-busy"].parent_uuid == "GPU-a" and by["MIG-busy"].gpu_instance_id == 2


def test_a_sessions_simulated_gpu_activity_follows_its_containers_cpu(
    core: Sandman, runtime: FakeRuntime
) -> None:
    clock = Clock()
    core.collector.monotonic = clock
    mig = _start(core, "alice", GpuRequest(mig_profile="1g.10gb"))
    whole = _start(core, "bob", GpuRequest(gpu_count=1))
    none = _start(core, "carol", GpuRequest(gpu_count=0))
    names = {row.id: row.container_name for row in core.sessions.list_sessions()}

    first = core.collector.collect()  # the first readings: no rate yet
    assert first.sessions[mig].cpu_percent is None and first.sessions[mig].gpu_active == 0.0

    clock.now += 15
    runtime.burn(names[mig], 9.0)  # 60% of one core over 15 s
    runtime.burn(names[whole], 30.0)  # two cores busy
    runtime.burn(names[none], 1.5)
    snapshot = core.collector.collect()
    assert snapshot.sessions[mig].cpu_percent == pytest.approx(60.0)
    assert snapshot.sessions[mig].gpu_active == pytest.approx(0.6)
    assert snapshot.sessions[whole].gpu_active == 1.0
    assert snapshot.sessions[none].gpu_active is None  # no GPU: nothing to be active
    assert snapshot.sessions[none].cpu_percent == pytest.approx(10.0)
    assert core.collector.activity(mig) == snapshot.sessions[mig]

    held = {h.session_id: h for h in snapshot.holders}
    instance = held[mig].devices[0]
    samples = {s.uuid: s for s in snapshot.gpus}
    assert samples[instance.uuid].gr_engine_active == pytest.approx(0.6)
    assert samples[instance.uuid].parent_uuid == instance.gpu_uuid
    assert samples[instance.uuid].gpu_instance_id == instance.gpu_instance_id
    assert samples[held[whole].devices[0].uuid].util_percent == 100.0

    clock.now += 15  # nothing ran: idle again
    idle = core.collector.collect()
    assert idle.sessions[mig].gpu_active == 0.0 and idle.sessions[mig].cpu_percent == 0.0


def test_each_pass_reads_each_running_session_once(core: Sandman, runtime: FakeRuntime) -> None:
    for user in ("alice", "bob", "carol"):
        _start(core, user, GpuRequest(gpu_count=0))
    before = runtime.calls["stats"]
    core.collector.collect()
    assert runtime.calls["stats"] - before == 3


def test_an_ended_sessions_reading_is_forgotten(core: Sandman, runtime: FakeRuntime) -> None:
    session = _start(core, "alice", GpuRequest(mig_profile="1g.10gb"))
    core.collector.collect()
    core.sessions.end(session, SessionStatus.DELETED, "test")
    snapshot = core.collector.collect()
    assert session not in snapshot.sessions and core.collector.activity(session) is None


def test_an_unreachable_engine_leaves_cpu_unknown(core: Sandman, runtime: FakeRuntime) -> None:
    session = _start(core, "alice", GpuRequest(gpu_count=0))
    runtime.unreachable = True
    snapshot = core.collector.collect()
    assert snapshot.sessions[session].cpu_percent is None


def test_mig_allocation_is_the_share_held_of_what_could_be_held(core: Sandman) -> None:
    _start(core, "alice", GpuRequest(mig_profile="3g.40gb"))
    ratio = core.collector.collect().mig_allocation
    assert ratio["3g.40gb"] == pytest.approx(1 / 2)  # one held, room for one more
    assert ratio["1g.10gb"] == 0.0  # none held, room for some
    assert "7g.80gb" not in ratio  # none held, none possible beside it: no share to tell
