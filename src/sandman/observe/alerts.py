"""Alertmanager's webhook turned into notices: who an alert concerns, and what to say.

An alert concerns the sessions its labels name: ``session`` (a Sandman series
such as ``sandman_session_gpu_active``), or the GPU it is about in
dcgm-exporter's labels: ``UUID`` with ``GPU_I_ID`` names one MIG instance, so the
one session holding it; ``UUID`` alone names a whole GPU (or a MIG instance's
own UUID), so every session on it. The label ``audience`` of a rule says who
hears of it: ``user`` (the sessions' users), ``admins``, or ``both``; without
it, the users when sessions were found. Whatever concerns no session goes to
the admins' channel of the notification defaults.

``route`` is pure; ``AlertIntake`` reads the active sessions and the GPU
inventory once per webhook call and hands the notices to the notifier.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sandman.gpu.types import GpuInventory
from sandman.observe.notify_channels import Notice
from sandman.services.sessions import SessionService

log = logging.getLogger(__name__)

AUDIENCES = ("user", "admins", "both")
NoticeSink = Callable[[Notice], bool]  # the notifier's submit


@dataclass(frozen=True)
class Alert:
    """One alert of a webhook call, as Alertmanager sends it."""

    status: str  # firing | resolved
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    starts_at: str | None = None

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "alert")


@dataclass(frozen=True)
class Holder:
    """An active session and the GPU devices it holds."""

    session_id: str
    user_id: str
    devices: frozenset[str] = frozenset()  # MIG instance or GPU UUIDs the session sees
    gpus: frozenset[str] = frozenset()  # the physical GPUs' UUIDs
    instances: frozenset[tuple[str, str]] = frozenset()  # (GPU UUID, GPU_I_ID)


@dataclass(frozen=True)
class Routing:
    holders: tuple[Holder, ...]
    admins: bool


def concerned(alert: Alert, holders: Sequence[Holder]) -> tuple[Holder, ...]:
    """The sessions ``alert`` is about, from its labels."""
    labels = alert.labels
    session = labels.get("session")
    if session:
        return tuple(h for h in holders if h.session_id == session)
    uuid = labels.get("UUID") or labels.get("uuid")
    if not uuid:
        return ()
    instance = labels.get("GPU_I_ID")
    if instance:
        return tuple(h for h in holders if (uuid, instance) in h.instances)
    return tuple(h for h in holders if uuid in h.devices or uuid in h.gpus)


def route(alert: Alert, holders: Sequence[Holder]) -> Routing:
    """Who hears of ``alert``: the users of the sessions it concerns, the admins, or both."""
    found = concerned(alert, holders)
    audience = alert.labels.get("audience", "")
    if audience not in AUDIENCES:
        audience = "user"
    users = found if audience in ("user", "both") else ()
    admins = audience in ("admins", "both") or not users
    return Routing(users, admins)


def describe(alert: Alert) -> tuple[str, str]:
    """The notice's subject and text: the rule's summary and description, and what
    the alert is about."""
    summary = alert.annotations.get("summary") or alert.name
    subject = f"resolved: {summary}" if alert.status == "resolved" else summary
    lines = []
    description = alert.annotations.get("description")
    if description:
        lines.append(description)
    about = [
        f"{key}={alert.labels[key]}"
        for key in ("session", "user", "UUID", "GPU_I_ID", "GPU_I_PROFILE", "Hostname", "profile")
        if alert.labels.get(key)
    ]
    if about:
        lines.append("About: " + ", ".join(about))
    lines.append(f"Alert: {alert.name} ({alert.status})")
    if alert.starts_at:
        lines.append(f"Since: {alert.starts_at}")
    return subject, "\n".join(lines)


def notices(alert: Alert, holders: Sequence[Holder]) -> list[Notice]:
    """What to send for ``alert`` (pure)."""
    routing = route(alert, holders)
    subject, text = describe(alert)
    severity = alert.labels.get("severity", "warning")
    found: list[Notice] = [
        Notice(subject, text, h.user_id, h.session_id, severity, alert.name)
        for h in routing.holders
    ]
    if routing.admins:
        found.append(Notice(subject, text, None, None, severity, alert.name))
    return found


def holders_from(
    sessions: Iterable[tuple[str, str, str | None, str | None, str | None]],
    instances: Mapping[str, tuple[str, int]],
) -> list[Holder]:
    """Holders from (session id, user, visible UUIDs comma-joined, parent GPU UUID,
    MIG instance UUID) rows and ``instances``: MIG UUID -> (GPU UUID, GPU_I_ID)."""
    found = []
    for session_id, user_id, visible, parent, instance in sessions:
        devices = {d for d in (visible or "").split(",") if d}
        if instance:
            devices.add(instance)
        gpus = {parent} if parent else set()
        pairs = set()
        for device in devices:
            if device in instances:
                gpu, gi = instances[device]
                gpus.add(gpu)
                pairs.add((gpu, str(gi)))
            elif device.startswith("GPU-"):
                gpus.add(device)
        found.append(
            Holder(session_id, user_id, frozenset(devices), frozenset(gpus), frozenset(pairs))
        )
    return found


class AlertIntake:
    """Receives Alertmanager's webhook calls."""

    def __init__(
        self, sessions: SessionService, inventory: GpuInventory, submit: NoticeSink
    ) -> None:
        self.sessions = sessions
        self.inventory = inventory
        self.submit = submit

    def holders(self) -> list[Holder]:
        instances: dict[str, tuple[str, int]] = {}
        try:
            for device in self.inventory.devices():
                for instance in device.instances:
                    instances[instance.uuid] = (device.uuid, instance.gpu_instance_id)
        except Exception:
            log.exception("the GPU inventory could not be read; matching sessions by UUID only")
        rows = self.sessions.list_sessions()
        return holders_from(
            ((s.id, s.user_id, s.gpu_uuid, s.gpu_parent_uuid, s.mig_instance_uuid) for s in rows),
            instances,
        )

    def receive(self, alerts: Sequence[Alert]) -> int:
        """Queue the notices for ``alerts``; how many were queued."""
        holders = self.holders()
        queued = 0
        for alert in alerts:
            for notice in notices(alert, holders):
                queued += bool(self.submit(notice))
        return queued
