"""What the portal's pages show, built from what the services answer: no I/O here.

Each builder is a pure function of rows, devices, settings and the clock, so the
pages' logic (a MIG layout drawn slot by slot, a GPU's alerts, the idle warning,
the ``~/.ssh/config`` block) is tested without a server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sandman.accounts.policy import Action, Caller, Target, decide
from sandman.gpu.catalogue import find_model
from sandman.gpu.types import GpuDevice, MigMode
from sandman.observe.idle import IdlePolicy, effective_timeout

# A GPU's alerts on its page: the same words as the shipped Prometheus rules' intent.
HOT_C = 85.0  # °C
POWER_NEAR = 0.95  # of the power limit
MEMORY_NEAR = 0.95  # of the memory
SLOTS_WITHOUT_MIG = 8  # a GPU handed out whole is drawn as one block this wide


@dataclass(frozen=True)
class NavItem:
    path: str
    label: str


# Which pages a caller sees in the menu: each needs one action, decided by ``decide``.
PAGES: tuple[tuple[str, str, Action], ...] = (
    ("/ui/", "My sessions", Action.SESSION_CREATE),
    ("/ui/keys", "SSH keys", Action.KEY_MANAGE),
    ("/ui/tokens", "Tokens", Action.TOKEN_READ),
    ("/ui/notifications", "Notifications", Action.NOTIFICATION_READ),
    ("/ui/usage", "Usage", Action.USAGE_READ),
    ("/ui/gpus", "GPUs", Action.SESSION_LIST_ALL),
    ("/ui/sessions", "All sessions", Action.SESSION_LIST_ALL),
    ("/ui/queue", "Queue", Action.SESSION_LIST_ALL),
    ("/ui/people", "People", Action.USER_LIST),
    ("/ui/environments", "Environments", Action.ENVIRONMENT_MANAGE),
    ("/ui/costs", "Costs", Action.USAGE_READ_ALL),
    ("/ui/audit", "Audit", Action.AUDIT_READ),
)
OWN_PAGES = frozenset(
    {Action.SESSION_CREATE, Action.KEY_MANAGE, Action.TOKEN_READ}
    | {Action.NOTIFICATION_READ, Action.USAGE_READ}
)


def may(caller: Caller, action: Action, owner: str | None = None) -> bool:
    """``decide`` on the caller's own things (``owner`` None) or on ``owner``'s."""
    return decide(caller, action, Target(owner=owner or caller.user_id)).allowed


def navigation(caller: Caller) -> list[NavItem]:
    """The menu: the pages whose action ``decide`` allows the caller."""
    items = []
    for path, label, action in PAGES:
        if action in OWN_PAGES and caller.user_id is None:
            continue
        if may(caller, action):
            items.append(NavItem(path, label))
    return items


# -- sessions ------------------------------------------------------------------------
@dataclass(frozen=True)
class IdleState:
    timeout_s: float  # 0: never reclaimed
    idle_s: float
    left_s: float | None
    warning: bool


def idle_state(
    last_activity: datetime | None,
    asked_minutes: int | None,
    default_timeout: float,
    maximum: float | None,
    warnings: Sequence[float],
    now: datetime,
) -> IdleState:
    """How long the session has been idle, how long until it is reclaimed, and whether
    its user is being warned (inside the longest warning before the reclaim)."""
    timeout = effective_timeout(asked_minutes, default_timeout, maximum)
    idle = max(0.0, (now - last_activity).total_seconds()) if last_activity else 0.0
    if timeout <= 0:
        return IdleState(0.0, idle, None, False)
    left = max(0.0, timeout - idle)
    applicable = IdlePolicy(timeout, tuple(warnings)).applicable_warnings
    longest = max(applicable, default=0.0)
    return IdleState(timeout, idle, left, bool(applicable) and left <= longest)


def seconds_until(moment: datetime | None, now: datetime) -> int | None:
    return None if moment is None else max(0, int((moment - now).total_seconds()))


def ssh_config(session: Mapping[str, Any], key_path: str = "~/.ssh/id_ed25519") -> str:
    """A ``~/.ssh/config`` block for the session with its host key pinned: the block
    names a known-hosts file of its own, and the line to put in it is included."""
    host, port, user = session["ssh_host"], session["ssh_port"], session["ssh_user"]
    alias = f"sandman-{session['id'][:8]}"
    known_hosts = "~/.ssh/sandman_known_hosts"
    key = session.get("ssh_host_public_key")
    lines = [
        f"# Sandman session {session['id']} of {user}",
        f"Host {alias}",
        f"    HostName {host}",
    ]
    if port:
        lines.append(f"    Port {port}")
    lines += [
        f"    User {user}",
        f"    IdentityFile {key_path}",
        f"    HostKeyAlias {alias}",
        f"    UserKnownHostsFile {known_hosts}",
        "    StrictHostKeyChecking yes",
        "",
    ]
    if key:
        lines += [
            f"# The host key, pinned: add this line to {known_hosts}",
            f"#   echo '{known_hosts_line(alias, key)}' >> {known_hosts}",
            f"# known_hosts: {known_hosts_line(alias, key)}",
        ]
    else:
        lines.append("# The host key is not known yet: the session has not started.")
    lines.append(f"# Then: ssh {alias}")
    return "\n".join(lines) + "\n"


def known_hosts_line(alias: str, public_key: str) -> str:
    return f"{alias} {public_key.strip()}"


# -- GPUs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    """One drawn block of a GPU's slots: an instance (held or free) or free slots."""

    start: int
    size: int
    kind: str  # held | free-instance | free | whole
    profile: str | None = None
    uuid: str | None = None
    session_id: str | None = None
    user_id: str | None = None


@dataclass(frozen=True)
class GpuCard:
    index: int
    uuid: str
    name: str
    model: str
    mig_mode: str
    slots: int
    blocks: list[Block]
    utilization: float | None
    temperature: float | None
    power: float | None
    power_limit: float | None
    memory_used_mb: int
    memory_total_mb: int
    alerts: list[str] = field(default_factory=list)
    sharing: str | None = None

    @property
    def memory_percent(self) -> float:
        return 100.0 * self.memory_used_mb / self.memory_total_mb if self.memory_total_mb else 0.0


def gpu_alerts(device: GpuDevice) -> list[str]:
    alerts = []
    if device.temperature_c is not None and device.temperature_c >= HOT_C:
        alerts.append(f"hot: {device.temperature_c:.0f} °C")
    if (
        device.power_usage_w is not None
        and device.power_limit_w
        and device.power_usage_w >= POWER_NEAR * device.power_limit_w
    ):
        alerts.append(f"power at {device.power_usage_w:.0f} of {device.power_limit_w:.0f} W")
    if device.memory_total_mb and device.memory_used_mb >= MEMORY_NEAR * device.memory_total_mb:
        alerts.append("memory nearly full")
    return alerts


def mig_blocks(
    device: GpuDevice, owners: Mapping[str, str], users: Mapping[str, str]
) -> tuple[int, list[Block]]:
    """The GPU's memory slots left to right: each instance where it starts, its
    session and user when held, and the free slots between."""
    model = find_model(device.model)
    if device.mig_mode == MigMode.DISABLED or model is None or not model.mig_capable:
        held = owners.get(device.uuid)
        user = users.get(held) if held else None
        kind = "whole" if held else "free"
        return SLOTS_WITHOUT_MIG, [
            Block(0, SLOTS_WITHOUT_MIG, kind, "whole GPU", device.uuid, held or None, user)
        ]
    total = model.memory_slices
    blocks: list[Block] = []
    cursor = 0
    for instance in sorted(device.instances, key=lambda i: i.start):
        if instance.start > cursor:
            blocks.append(Block(cursor, instance.start - cursor, "free"))
        held = owners.get(instance.uuid)
        blocks.append(
            Block(
                instance.start,
                instance.size,
                "held" if held else "free-instance",
                instance.profile,
                instance.uuid,
                held or None,
                users.get(held) if held else None,
            )
        )
        cursor = max(cursor, instance.start + instance.size)
    if cursor < total:
        blocks.append(Block(cursor, total - cursor, "free"))
    return total, blocks


def gpu_cards(
    devices: Iterable[GpuDevice], owners: Mapping[str, str], users: Mapping[str, str]
) -> list[GpuCard]:
    cards = []
    for device in devices:
        slots, blocks = mig_blocks(device, owners, users)
        sharing = None
        if device.sharing is not None:
            sharing = f"{device.sharing.mode} x{device.sharing.replicas}"
        cards.append(
            GpuCard(
                index=device.index,
                uuid=device.uuid,
                name=device.name,
                model=device.model,
                mig_mode=device.mig_mode.value,
                slots=slots,
                blocks=blocks,
                utilization=device.utilization_percent,
                temperature=device.temperature_c,
                power=device.power_usage_w,
                power_limit=device.power_limit_w,
                memory_used_mb=device.memory_used_mb,
                memory_total_mb=device.memory_total_mb,
                alerts=gpu_alerts(device),
                sharing=sharing,
            )
        )
    return cards


@dataclass(frozen=True)
class ProfileChoice:
    name: str
    label: str
    free: int  # instances that could be had now (0: the request would queue)


def profile_choices(devices: Sequence[GpuDevice], free: Mapping[str, Any]) -> list[ProfileChoice]:
    """The MIG profiles of the models present, with how many are free now (free
    instances of a static layout, or what a dynamic GPU can still create)."""
    counts: dict[str, int] = {}
    sizes: dict[str, str] = {}
    order: dict[str, int] = {}
    whole = 0
    per_gpu = free.get("gpus", {})
    for device in devices:
        model = find_model(device.model)
        entry = per_gpu.get(device.uuid, {})
        if device.mig_mode == MigMode.DISABLED or model is None or not model.mig_capable:
            whole += int(bool(entry.get("whole_free")))
            continue
        for profile in model.profiles:
            counts.setdefault(profile.name, 0)
            sizes.setdefault(profile.name, f"{profile.memory_gb} GB")
            order.setdefault(profile.name, profile.memory_mib)
        for instance in entry.get("free_instances", []):
            counts[instance["profile"]] = counts.get(instance["profile"], 0) + 1
        for name, count in (entry.get("creatable") or {}).items():
            counts[name] = counts.get(name, 0) + int(count)
    choices = [
        ProfileChoice(name, f"{name} ({sizes.get(name, '?')})", counts[name])
        for name in sorted(counts, key=lambda n: (order.get(n, 0), n))
    ]
    if any(d.mig_mode == MigMode.DISABLED for d in devices):
        choices.append(ProfileChoice("whole", "a whole GPU", whole))
    return choices
