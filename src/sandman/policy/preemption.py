"""Which running sessions are protected, and which a queued request may preempt.

A team's running sessions are ordered by priority (highest first), then age
(oldest first); those whose running total of slices stays within the team's
guarantee are protected and never preempted. A queued request may preempt only
unprotected sessions of a priority not higher than its own, and takes the set
that frees what it needs with the least disruption: fewest sessions, then the
lowest priorities, then the youngest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import combinations

from sandman.policy.quotas import Priority

MAX_CANDIDATES = 12  # subsets of the cheapest candidates only: the search stays small


@dataclass(frozen=True)
class Running:
    session_id: str
    user_id: str
    team: str | None
    priority: Priority
    started_at: datetime
    slices: float


def protected(running: Iterable[Running], guarantees: Mapping[str, float]) -> frozenset[str]:
    """The sessions within their team's guarantee (priority first, then age)."""
    by_team: dict[str, list[Running]] = {}
    for session in running:
        if session.team is not None:
            by_team.setdefault(session.team, []).append(session)
    safe: set[str] = set()
    for team, sessions in by_team.items():
        guarantee = guarantees.get(team) or 0.0
        total = 0.0
        for session in sorted(sessions, key=lambda s: (-s.priority.rank, s.started_at)):
            total += session.slices
            if total > guarantee + 1e-9:
                break
            safe.add(session.session_id)
    return frozenset(safe)


def _cost(victims: Sequence[Running]) -> tuple[int, int, float]:
    """Fewer sessions, then lower priorities, then younger (later started) first."""
    return (
        len(victims),
        sum(v.priority.rank for v in victims),
        -sum(v.started_at.timestamp() for v in victims),
    )


def choose_victims(
    running: Sequence[Running],
    guarantees: Mapping[str, float],
    priority: Priority,
    fits_without: Callable[[frozenset[str]], bool],
) -> list[Running] | None:
    """The least disruptive set of sessions whose end lets the request fit, or None.

    ``fits_without(ids)`` says whether the request fits once those sessions are
    gone (the planner decides: which GPU they free matters, not only how much).
    """
    safe = protected(running, guarantees)
    candidates = sorted(
        (s for s in running if s.session_id not in safe and s.priority.rank <= priority.rank),
        key=lambda s: (s.priority.rank, -s.started_at.timestamp()),
    )[:MAX_CANDIDATES]
    for size in range(1, len(candidates) + 1):
        options = sorted(combinations(candidates, size), key=_cost)
        for victims in options:
            if fits_without(frozenset(v.session_id for v in victims)):
                return list(victims)
    return None


LOWER = {Priority.HIGH: Priority.NORMAL, Priority.NORMAL: Priority.LOW}


def reach(
    priority: Priority, team_slices: float, ask_slices: float, guarantee: float
) -> Priority | None:
    """The highest priority a queued request may preempt, or None.

    Within its team's guarantee (what the team holds plus this request) it may
    take back slices from sessions of a priority up to its own; beyond it, only
    from lower ones, so two teams over their guarantees cannot take the same
    slices back and forth.
    """
    if team_slices + ask_slices <= guarantee + 1e-9:
        return priority
    return LOWER.get(priority)
