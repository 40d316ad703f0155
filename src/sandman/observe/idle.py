"""Idle reclaim, the rules: when a session counts as idle, when its user is warned,
and when it is reclaimed. Pure functions of (activity, policy, clock), like
jupyterhub-idle-culler's: the sweep around them (``idle_sweep``) gathers the
evidence and acts, and tests move time instead of sleeping.

A session is busy at a moment when any of these happened then: channel data
through the gateway (or a login, an extension through the API, use of one of its
web apps), input on one of its terminals, a running file transfer, a touch of
its keepalive file (which may name a moment in the future), CPU at or above
``cpu_percent`` of one core, or GPU activity at or above ``gpu_percent``. It is
idle once the last busy moment is ``timeout`` in the past. Sandman's own start
(or the moment it began watching the session) counts as busy: what it could
not see, it never holds against a session.

The same rule covers a GPU Sandman cannot see. Where no sampler reads the GPU a
session holds (Kubernetes without a GPU metrics source, a query that failed, a
pod the source has no series for), its GPU activity is *unknown*: the session is
kept, with that reason, and neither warned nor reclaimed; the last moment it was
unknown counts as busy, so an idle stretch starts only once the GPU is seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sandman.errors import InvalidRequest

DEFAULT_WARNINGS = (15 * 60.0, 2 * 60.0)
DEFAULT_THRESHOLD_PERCENT = 5.0


def parse_warnings(value: Any) -> tuple[float, ...]:
    """``"15m,2m"`` as seconds before reclaim, longest first; ``""``/``none``: no warnings.

    Each item is a duration as everywhere in the settings (a bare number is seconds).
    """
    from sandman.config import parse_duration  # config reads this module's rules

    if isinstance(value, str):
        if value.strip().lower() in ("", "none", "off"):
            return ()
        items: Iterable[Any] = [part for part in value.split(",") if part.strip()]
    elif isinstance(value, int | float):
        items = [value]
    else:
        items = value
    found: set[float] = set()
    for item in items:
        seconds = parse_duration(item)
        if seconds <= 0:
            raise ValueError(f"a warning must come some time before the reclaim, not {item!r}")
        found.add(seconds)
    return tuple(sorted(found, reverse=True))


@dataclass(frozen=True)
class IdlePolicy:
    """What applies to one session. ``timeout`` 0 means it is never reclaimed."""

    timeout: float  # seconds without activity before the reclaim
    warnings: tuple[float, ...] = DEFAULT_WARNINGS  # seconds before the reclaim
    cpu_percent: float = DEFAULT_THRESHOLD_PERCENT  # of one core
    gpu_percent: float = DEFAULT_THRESHOLD_PERCENT

    @property
    def enabled(self) -> bool:
        return self.timeout > 0

    @property
    def applicable_warnings(self) -> tuple[float, ...]:
        """Warnings that fit in the timeout; one as long as the timeout or longer would
        come before the session was idle at all, so it is skipped."""
        return tuple(w for w in self.warnings if w < self.timeout)


def effective_timeout(asked_minutes: int | None, default: float, maximum: float | None) -> float:
    """The timeout, in seconds, of a session that asked for ``asked_minutes`` (None: the
    deployment's ``default``; 0: never). A maximum lowered after the session asked
    still holds: it is the most any session gets, and never becomes it."""
    timeout = default if asked_minutes is None else asked_minutes * 60.0
    if maximum is not None and (timeout <= 0 or timeout > maximum):
        return maximum
    return timeout


def idle_timeout_range(maximum: float | None, max_ttl_minutes: int) -> tuple[int, int]:
    """The idle timeouts, in minutes, a session may ask for (0: never)."""
    if maximum is None:
        return 0, max_ttl_minutes
    return 1, min(max_ttl_minutes, int(maximum // 60))


def checked_idle_timeout(
    minutes: int | None, maximum: float | None, max_ttl_minutes: int
) -> int | None:
    """A session's own idle timeout as asked at creation, or ``InvalidRequest`` saying
    what may be asked. None (the deployment's default) is always allowed."""
    if minutes is None:
        return None
    if isinstance(minutes, bool) or not isinstance(minutes, int):
        raise InvalidRequest("idle_timeout_minutes must be a whole number of minutes")
    low, top = idle_timeout_range(maximum, max_ttl_minutes)
    if maximum is None:
        if not low <= minutes <= top:
            raise InvalidRequest(f"idle_timeout_minutes must be from 0 (never) to {top}")
        return minutes
    rule = f"sessions are reclaimed after at most {human(maximum)} without activity"
    if minutes == 0:
        raise InvalidRequest(f"idle_timeout_minutes cannot be 0 (never) here: {rule}")
    if not low <= minutes <= top:
        allowed = f"ask for 1 to {top}" if top >= 1 else "leave it out"
        raise InvalidRequest(f"idle_timeout_minutes {minutes} is too long here: {rule}; {allowed}")
    return minutes


# ------------------------------------------------------------------ the evidence


@dataclass(frozen=True)
class Activity:
    """The last moment each kind of activity of one session was seen; None: never.

    ``watched_since`` is when Sandman began watching the session (its start, or
    Sandman's own start); it counts as activity. ``cpu_percent`` and
    ``gpu_percent`` are the latest readings, for the messages only.
    ``gpu_unknown`` says why the activity of the GPU it holds cannot be seen now
    (None: it can, or it holds none); ``gpu_unseen`` is the last moment it could
    not be seen, which counts as activity of a session holding a GPU.
    """

    watched_since: datetime
    connection: datetime | None = None  # gateway channel data, logins, API, web use
    terminal: datetime | None = None  # input on one of its terminals
    transfer: datetime | None = None  # a file transfer seen running
    keepalive: datetime | None = None  # the keepalive file's time (may be ahead)
    compute: datetime | None = None  # CPU or GPU at or above the thresholds
    cpu_percent: float | None = None
    gpu_percent: float | None = None
    has_gpu: bool = False
    gpu_unknown: str | None = None
    gpu_unseen: datetime | None = None

    @property
    def gpu_blind(self) -> str | None:
        """Why this session's GPU activity is unknown, when it holds a GPU and it is."""
        return self.gpu_unknown if self.has_gpu else None

    def last_busy(self, now: datetime) -> datetime:
        """The last moment anything happened; a keepalive ahead of ``now`` is now."""
        keepalive = min(self.keepalive, now) if self.keepalive is not None else None
        unseen = min(self.gpu_unseen, now) if self.has_gpu and self.gpu_unseen else None
        moments = [self.connection, self.terminal, self.transfer, keepalive, self.compute, unseen]
        return max([self.watched_since, *(m for m in moments if m is not None)])


@dataclass(frozen=True)
class Warned:
    """The warning last given: for the idle stretch that began at ``since``,
    ``left`` seconds before its reclaim."""

    since: datetime
    left: float


# ------------------------------------------------------------------ the decision


@dataclass(frozen=True)
class Keep:
    """Nothing to do; ``reclaim_at`` is when it would be reclaimed if nothing happens.

    ``held`` says why a session is kept whatever the clock says (its GPU activity
    is unknown); ``reclaim_at`` is then None.
    """

    reclaim_at: datetime | None
    held: str | None = None


@dataclass(frozen=True)
class Warn:
    """Tell the user: idle since ``since``, reclaimed at ``reclaim_at``."""

    warning: float  # the configured warning this is (seconds before the reclaim)
    since: datetime
    reclaim_at: datetime


@dataclass(frozen=True)
class Reclaim:
    since: datetime


Decision = Keep | Warn | Reclaim


def decide(
    activity: Activity, policy: IdlePolicy, warned: Warned | None, now: datetime
) -> Decision:
    """What to do with one session now.

    It is reclaimed once it has been idle for the whole timeout. Before that, each
    warning is given once per idle stretch, when its time has come; when a late
    sweep finds several due at once, only the nearest to the reclaim is given.
    Any activity starts a new stretch, and with it a new round of warnings.
    A session whose GPU activity is unknown is kept, and not warned: it may be
    busy on its GPU, and a warning would announce a reclaim that will not come.
    """
    if not policy.enabled:
        return Keep(None)
    blind = activity.gpu_blind
    if blind is not None:
        return Keep(None, held=f"GPU activity unknown: {blind}")
    since = activity.last_busy(now)
    reclaim_at = since + timedelta(seconds=policy.timeout)
    if now >= reclaim_at:
        return Reclaim(since)
    left = (reclaim_at - now).total_seconds()
    due = [w for w in policy.applicable_warnings if left <= w]
    if not due:
        return Keep(reclaim_at)
    nearest = min(due)
    if warned is not None and warned.since == since and warned.left <= nearest:
        return Keep(reclaim_at)
    return Warn(nearest, since, reclaim_at)


# ------------------------------------------------------------------ the words


def human(seconds: float) -> str:
    """``45 s``, ``52 min``, ``3 h 5 min``: durations for people."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h" if minutes == 0 else f"{hours} h {minutes} min"


def _percent(value: float) -> str:
    return f"{value:.0f}%" if value >= 10 or value == 0 else f"{value:.1f}%"


def describe(activity: Activity, now: datetime) -> str:
    """Why a session looks idle, e.g. ``no SSH traffic for 52 min, GPU 0%, CPU 0.3%``."""
    if activity.connection is None:
        parts = ["no SSH traffic since it started"]
    else:
        parts = [f"no SSH traffic for {human((now - activity.connection).total_seconds())}"]
    if activity.has_gpu and activity.gpu_percent is not None:
        parts.append(f"GPU {_percent(activity.gpu_percent)}")
    if activity.cpu_percent is not None:
        parts.append(f"CPU {_percent(activity.cpu_percent)}")
    return ", ".join(parts)


KEEP_HINT = (
    "To keep it, use it (type, run something, move data), run sandman-keepalive inside "
    "it, or extend it through the API (PATCH /sessions/{session_id})."
)


def warning_message(
    session_id: str, activity: Activity, policy: IdlePolicy, decision: Warn, now: datetime
) -> tuple[str, str]:
    """(subject, text) of a warning: why, when, what is lost and kept, how to keep it."""
    idle_for = human((now - decision.since).total_seconds())
    left = human((decision.reclaim_at - now).total_seconds())
    subject = f"Sandman session {session_id} is idle: reclaimed in {left}"
    text = (
        f"Sandman: session {session_id} has been idle for {idle_for} "
        f"({describe(activity, now)}) and will be reclaimed in {left} "
        f"(idle timeout {human(policy.timeout)}): its GPU is given back, /workspace is "
        f"kept. {KEEP_HINT.format(session_id=session_id)}"
    )
    return subject, text


def reclaim_reason(activity: Activity, policy: IdlePolicy, since: datetime, now: datetime) -> str:
    """The ``end_reason`` of a reclaimed session."""
    return (
        f"idle for {human((now - since).total_seconds())} ({describe(activity, now)}); "
        f"idle timeout {human(policy.timeout)}"
    )


def reclaim_message(session_id: str, reason: str) -> tuple[str, str]:
    subject = f"Sandman session {session_id} was reclaimed: idle"
    text = (
        f"Sandman: session {session_id} is being reclaimed: {reason}. Its GPU and port are "
        "given back; /workspace is kept. Start a new session to go on."
    )
    return subject, text


def banner_lines(policy: IdlePolicy, notice: str | None) -> str:
    """What the login banner says about idle reclaim (nothing when it does not apply)."""
    if not policy.enabled:
        return ""
    lines = (
        f"  Idle:    reclaimed after {human(policy.timeout)} without activity "
        "(sandman-keepalive keeps it)\n"
    )
    if notice:
        lines += f"  {notice}\n"
    return lines
