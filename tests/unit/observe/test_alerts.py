"""Who hears of an alert (pure), and the webhook's notices for sessions on real MIG
instances of the simulated inventory."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import fake_core

from sandman.gpu.types import GpuRequest
from sandman.observe.alerts import Alert, Holder, describe, holders_from, notices, route
from sandman.observe.notify_channels import Notice
from sandman.services.requests import SessionRequest

ALICE = Holder(
    "s-a", "alice", frozenset({"MIG-a"}), frozenset({"GPU-0"}), frozenset({("GPU-0", "1")})
)
BOB = Holder("s-b", "bob", frozenset({"MIG-b"}), frozenset({"GPU-0"}), frozenset({("GPU-0", "2")}))
CAROL = Holder("s-c", "carol", frozenset({"GPU-1"}), frozenset({"GPU-1"}))
HOLDERS = [ALICE, BOB, CAROL]


def alert(**labels: str) -> Alert:
    return Alert("firing", {"alertname": "X", **labels}, {"summary": "sum"})


def test_a_session_label_names_its_user() -> None:
    assert route(alert(session="s-b"), HOLDERS).holders == (BOB,)


def test_a_mig_instance_names_the_session_holding_it() -> None:
    routing = route(alert(UUID="GPU-0", GPU_I_ID="2"), HOLDERS)
    assert routing.holders == (BOB,) and not routing.admins


def test_a_whole_gpu_names_every_session_on_it() -> None:
    assert route(alert(UUID="GPU-0"), HOLDERS).holders == (ALICE, BOB)
    assert route(alert(UUID="GPU-1"), HOLDERS).holders == (CAROL,)
    assert route(alert(UUID="MIG-a"), HOLDERS).holders == (ALICE,)


def test_audience() -> None:
    both = route(alert(UUID="GPU-1", audience="both"), HOLDERS)
    assert both.holders == (CAROL,) and both.admins
    admins = route(alert(UUID="GPU-1", audience="admins"), HOLDERS)
    assert admins.holders == () and admins.admins
    nobody = route(alert(UUID="GPU-9", audience="user"), HOLDERS)
    assert nobody.holders == () and nobody.admins  # about no session: the admins
    assert route(alert(), HOLDERS).admins


def test_what_the_notice_says() -> None:
    firing = Alert(
        "firing",
        {"alertname": "GpuOverheating", "UUID": "GPU-0", "severity": "critical"},
        {"summary": "GPU 0 is at 90 °C", "description": "Check its cooling."},
        "2026-01-01T00:00:00Z",
    )
    subject, text = describe(firing)
    assert subject == "GPU 0 is at 90 °C"
    assert text.splitlines() == [
        "Check its cooling.",
        "About: UUID=GPU-0",
        "Alert: GpuOverheating (firing)",
        "Since: 2026-01-01T00:00:00Z",
    ]
    resolved = Alert("resolved", firing.labels, firing.annotations)
    assert describe(resolved)[0] == "resolved: GPU 0 is at 90 °C"
    found = notices(Alert("firing", {**firing.labels, "audience": "both"}, {}), HOLDERS)
    assert [(n.user_id, n.session_id, n.severity) for n in found] == [
        ("alice", "s-a", "critical"),
        ("bob", "s-b", "critical"),
        (None, None, "critical"),
    ]


def test_holders_from_session_rows() -> None:
    [holder] = holders_from([("s1", "alice", "MIG-x", "GPU-0", "MIG-x")], {"MIG-x": ("GPU-0", 3)})
    assert holder.instances == frozenset({("GPU-0", "3")}) and holder.gpus == {"GPU-0"}
    [whole] = holders_from([("s2", "bob", "GPU-1,GPU-2", None, None)], {})
    assert whole.gpus == {"GPU-1", "GPU-2"} and whole.instances == frozenset()


def test_the_intake_finds_the_session_on_a_mig_instance(tmp_path: Path) -> None:
    core = fake_core(tmp_path, FakeRuntime())
    try:
        created = core.sessions.create(
            SessionRequest("alice", gpu=GpuRequest(mig_profile="1g.5gb"))
        ).session
        queued: list[Notice] = []
        core.alerts.submit = lambda notice: queued.append(notice) or True
        device = next(d for d in core.inventory.devices() if d.instances)
        instance = next(i for i in device.instances if i.uuid == created.mig_instance_uuid)
        labels = {"UUID": device.uuid, "GPU_I_ID": str(instance.gpu_instance_id)}
        assert core.alerts.receive([alert(**labels)]) == 1
        assert [(n.user_id, n.session_id) for n in queued] == [("alice", created.id)]
        queued.clear()
        other = next(i for i in device.instances if i.uuid != created.mig_instance_uuid)
        core.alerts.receive([alert(UUID=device.uuid, GPU_I_ID=str(other.gpu_instance_id))])
        assert [n.user_id for n in queued] == [None]  # a free instance: the admins
    finally:
        core.stop()
