"""Quotas per user, team and project: limits that apply together, the strictest
winning, and a check that names the quota and the numbers when it refuses."""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum

from sandman.policy.units import words


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return {"low": 0, "normal": 1, "high": 2}[self.value]


class ScopeKind(StrEnum):
    USER = "user"
    TEAM = "team"
    PROJECT = "project"


@dataclass(frozen=True)
class Quota:
    """Limits of one user, team or project (None: no limit of this kind)."""

    max_sessions: int | None = None
    max_slices: float | None = None  # concurrent, in sevenths of a GPU
    guaranteed_slices: float | None = None  # teams: protected from preemption
    max_ttl_minutes: int | None = None
    max_gpu_hours_month: float | None = None
    allowed_profiles: frozenset[str] | None = None
    allowed_models: frozenset[str] | None = None
    allowed_images: frozenset[str] | None = None
    allowed_priorities: frozenset[str] | None = None

    def merged(self, other: Quota) -> Quota:
        """Both quotas at once: the smaller number, the intersection of allowed sets."""
        values = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine is None or theirs is None:
                values[f.name] = theirs if mine is None else mine
            elif isinstance(mine, frozenset):
                values[f.name] = mine & theirs
            else:
                values[f.name] = min(mine, theirs)
        return Quota(**values)

    def over(self, defaults: Quota) -> Quota:
        """This quota, its unset fields taken from the defaults of its kind."""
        values = {
            f.name: getattr(self, f.name)
            if getattr(self, f.name) is not None
            else getattr(defaults, f.name)
            for f in fields(self)
        }
        return Quota(**values)


@dataclass(frozen=True)
class Usage:
    """What a user, team or project holds now and used this month."""

    sessions: int = 0
    slices: float = 0.0
    gpu_hours_month: float = 0.0


@dataclass(frozen=True)
class Ask:
    """What a request would add."""

    slices: float
    ttl_minutes: int
    priority: Priority = Priority.NORMAL
    profile: str | None = None
    model: str | None = None
    image: str | None = None


@dataclass(frozen=True)
class Violation:
    """One quota a request breaks; ``waitable`` when it would pass once the same
    user's or team's own sessions end (so a queued request may wait for it)."""

    scope: str  # "team vision"
    quota: str  # "max_slices"
    message: str
    waitable: bool


def check(scope: str, quota: Quota, usage: Usage, ask: Ask) -> list[Violation]:
    """Every quota of ``scope`` that ``ask`` breaks, in words with the numbers."""
    found: list[Violation] = []

    def add(name: str, message: str, waitable: bool = False) -> None:
        found.append(Violation(scope, name, f"{scope}: {message}", waitable))

    if quota.max_sessions is not None and usage.sessions + 1 > quota.max_sessions:
        add(
            "max_sessions",
            f"has {usage.sessions} of {quota.max_sessions} sessions (max_sessions)",
            waitable=True,
        )
    if quota.max_slices is not None and usage.slices + ask.slices > quota.max_slices + 1e-9:
        add(
            "max_slices",
            f"uses {words(usage.slices)} of {words(quota.max_slices)} slices; "
            f"this request needs {words(ask.slices)} (max_slices)",
            waitable=ask.slices <= quota.max_slices + 1e-9,
        )
    if quota.max_ttl_minutes is not None and ask.ttl_minutes > quota.max_ttl_minutes:
        add(
            "max_ttl_minutes",
            f"allows sessions of at most {quota.max_ttl_minutes} minutes, "
            f"not {ask.ttl_minutes} (max_ttl_minutes)",
        )
    hours = quota.max_gpu_hours_month
    if hours is not None and ask.slices > 0 and usage.gpu_hours_month >= hours:
        add(
            "max_gpu_hours_month",
            f"used {usage.gpu_hours_month:.1f} of {hours:g} GPU-hours "
            "this month (max_gpu_hours_month)",
        )
    for name, value in (
        ("allowed_profiles", ask.profile),
        ("allowed_models", ask.model),
        ("allowed_images", ask.image),
        ("allowed_priorities", ask.priority.value),
    ):
        allowed: frozenset[str] | None = getattr(quota, name)
        if allowed is not None and value is not None and value not in allowed:
            listed = ", ".join(sorted(allowed)) or "none"
            add(name, f"allows {listed}, not {value} ({name})")
    return found
