"""The portal's pure builders: MIG layouts slot by slot, GPU alerts, the idle
warning, the menu by role, and the ssh-config block."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sandman.accounts.policy import Caller, Role
from sandman.gpu.types import GpuDevice, MigInstance, MigMode
from sandman.web.portal_views import gpu_alerts, idle_state, mig_blocks, navigation, ssh_config

NOW = datetime(2025, 1, 1, 12, tzinfo=UTC)


def h100(*instances: MigInstance, **changes: object) -> GpuDevice:
    values: dict[str, object] = {
        "index": 0,
        "uuid": "GPU-0",
        "name": "NVIDIA H100 80GB HBM3",
        "model": "H100-SXM5-80GB",
        "memory_total_mb": 81559,
        "memory_used_mb": 0,
        "utilization_percent": 0,
        "temperature_c": 40,
        "power_usage_w": 100.0,
        "power_limit_w": 700.0,
        "mig_mode": MigMode.DYNAMIC,
        "instances": instances,
        **changes,
    }
    return GpuDevice(**values)  # type: ignore[arg-type]


def instance(uuid: str, profile: str, start: int, size: int) -> MigInstance:
    return MigInstance(uuid=uuid, profile=profile, start=start, size=size, memory_mb=size * 10240)


def test_mig_layout_slot_by_slot() -> None:
    device = h100(instance("MIG-a", "3g.40gb", 4, 4), instance("MIG-b", "1g.10gb", 0, 1))
    total, blocks = mig_blocks(device, {"MIG-a": "s1"}, {"s1": "alice"})
    assert total == 8
    assert [(b.start, b.size, b.kind) for b in blocks] == [
        (0, 1, "free-instance"),
        (1, 3, "free"),
        (4, 4, "held"),
    ]
    assert blocks[2].session_id == "s1" and blocks[2].user_id == "alice"


def test_whole_gpu_is_one_block() -> None:
    device = h100(mig_mode=MigMode.DISABLED)
    _, blocks = mig_blocks(device, {"GPU-0": "s2"}, {"s2": "bob"})
    assert len(blocks) == 1 and blocks[0].kind == "whole" and blocks[0].user_id == "bob"


def test_alerts() -> None:
    assert gpu_alerts(h100()) == []
    hot = h100(temperature_c=90, power_usage_w=690.0, memory_used_mb=80000)
    assert len(gpu_alerts(hot)) == 3


def test_idle_warning_inside_the_longest_warning() -> None:
    calm = idle_state(NOW - timedelta(minutes=10), 60, 0.0, None, (900.0, 120.0), NOW)
    assert not calm.warning and calm.left_s == 50 * 60
    close = idle_state(NOW - timedelta(minutes=50), 60, 0.0, None, (900.0, 120.0), NOW)
    assert close.warning
    never = idle_state(NOW - timedelta(days=1), None, 0.0, None, (900.0,), NOW)
    assert never.timeout_s == 0 and not never.warning


def test_menu_follows_the_policy() -> None:
    user = {item.path for item in navigation(Caller("u", Role.USER))}
    operator = {item.path for item in navigation(Caller("o", Role.OPERATOR))}
    assert "/ui/gpus" not in user and "/ui/" in user
    assert {"/ui/gpus", "/ui/sessions", "/ui/audit"} <= operator


def test_ssh_config_pins_the_host_key() -> None:
    text = ssh_config(
        {
            "id": "0123456789abcdef",
            "ssh_host": "gpu.example.org",
            "ssh_port": 2222,
            "ssh_user": "alice",
            "ssh_host_public_key": "ssh-ed25519 AAAAkey",
        }
    )
    assert "Host sandman-01234567" in text
    assert "Port 2222" in text and "StrictHostKeyChecking yes" in text
    assert "sandman-01234567 ssh-ed25519 AAAAkey" in text
