"""Quotas kept in the database, and what a user, team or project uses now.

The decisions are in ``policy.quotas`` (pure); this service reads the rows and the
sessions they are decided on, and writes quotas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session as Db

from sandman.domain import ACTIVE_STATUSES, validate_name, validate_user_id
from sandman.errors import NotFound, QuotaExceeded
from sandman.policy.quotas import Ask, Quota, ScopeKind, Usage, Violation, check
from sandman.policy.units import gpu_hours, grant_slices
from sandman.store.database import Database
from sandman.store.models import QuotaRow, utcnow
from sandman.store.models import Session as SessionRow

DEFAULTS = "*"
ACTIVE = [s.value for s in ACTIVE_STATUSES]
SET_FIELDS = {"allowed_profiles", "allowed_models", "allowed_images", "allowed_priorities"}


def to_limits(quota: Quota) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(quota):
        value = getattr(quota, f.name)
        if value is not None:
            out[f.name] = sorted(value) if isinstance(value, frozenset) else value
    return out


def from_limits(limits: dict[str, Any]) -> Quota:
    values: dict[str, Any] = {
        name: frozenset(value) if name in SET_FIELDS else value
        for name, value in limits.items()
        if name in {f.name for f in fields(Quota)}
    }
    return Quota(**values)


def session_slices(row: SessionRow) -> float:
    """What a session counts: each GPU it holds, its MIG instance, or its share of a
    shared GPU (``gpu_share``). The grants are on the row from its reservation
    (``gpu_parent_uuid``), before its container and ``gpu_uuid`` exist."""
    held = row.gpu_parent_uuid or row.gpu_uuid
    if not held:
        return 0.0
    count = len(held.split(","))
    return sum(grant_slices(row.gpu_name, row.mig_profile, row.gpu_share) for _ in range(count))


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class QuotaView:
    kind: str
    name: str
    limits: dict[str, Any]
    updated_at: datetime


class Quotas:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- storage -------------------------------------------------------------------
    def put(self, kind: ScopeKind, name: str, quota: Quota) -> QuotaView:
        if name != DEFAULTS:
            self._check_name(kind, name)
        with self.db.transaction() as db:
            row = db.get(QuotaRow, (kind.value, name))
            if row is None:
                row = QuotaRow(kind=kind.value, name=name)
                db.add(row)
            row.limits = to_limits(quota)
            row.updated_at = utcnow()
            db.flush()
            return QuotaView(row.kind, row.name, dict(row.limits), row.updated_at)

    def delete(self, kind: ScopeKind, name: str) -> None:
        with self.db.transaction() as db:
            row = db.get(QuotaRow, (kind.value, name))
            if row is None:
                raise NotFound(f"no quota for {kind.value} {name}")
            db.delete(row)

    def list_quotas(self, keys: Sequence[tuple[ScopeKind, str]] | None = None) -> list[QuotaView]:
        query = select(QuotaRow).order_by(QuotaRow.kind, QuotaRow.name)
        with self.db.read() as db:
            rows = list(db.scalars(query))
        wanted = None if keys is None else {(k.value, n) for k, n in keys}
        return [
            QuotaView(r.kind, r.name, dict(r.limits), r.updated_at)
            for r in rows
            if wanted is None or (r.kind, r.name) in wanted
        ]

    def _check_name(self, kind: ScopeKind, name: str) -> None:
        if kind == ScopeKind.USER:
            validate_user_id(name)
        else:
            validate_name(name, kind.value)

    # -- what applies ----------------------------------------------------------------
    def effective(self, db: Db, kind: ScopeKind, name: str, lock: bool = False) -> Quota:
        """The quota that applies; with ``lock``, its rows stay locked until the
        transaction ends, so reservations under one quota take turns (PostgreSQL;
        SQLite's write transactions take turns anyway)."""
        own = db.get(QuotaRow, (kind.value, name), with_for_update=lock)
        defaults = db.get(QuotaRow, (kind.value, DEFAULTS), with_for_update=lock)
        quota = from_limits(own.limits) if own is not None else Quota()
        return quota.over(from_limits(defaults.limits) if defaults is not None else Quota())

    def usage(self, db: Db, kind: ScopeKind, name: str, now: datetime) -> Usage:
        column = {
            ScopeKind.USER: SessionRow.user_id,
            ScopeKind.TEAM: SessionRow.team,
            ScopeKind.PROJECT: SessionRow.project,
        }[kind]
        start = month_start(now)
        rows = db.scalars(
            select(SessionRow).where(
                column == name,
                or_(SessionRow.status.in_(ACTIVE), SessionRow.ended_at >= start),
            )
        )
        sessions, slices, slice_hours = 0, 0.0, 0.0
        for row in rows:
            held = session_slices(row)
            if row.status in ACTIVE:
                sessions += 1
                slices += held
            began = row.started_at or row.created_at
            ended = row.ended_at or now
            overlap = (min(ended, now) - max(began, start)).total_seconds()
            if overlap > 0:
                slice_hours += held * overlap / 3600
        return Usage(sessions, slices, gpu_hours(slice_hours))

    def scopes(
        self, user_id: str, team: str | None, project: str | None
    ) -> list[tuple[ScopeKind, str, str]]:
        found = [(ScopeKind.USER, user_id, f"user {user_id}")]
        if team is not None:
            found.append((ScopeKind.TEAM, team, f"team {team}"))
        if project is not None:
            found.append((ScopeKind.PROJECT, project, f"project {project}"))
        return found

    def violations(
        self,
        db: Db,
        user_id: str,
        team: str | None,
        project: str | None,
        ask: Ask,
        lock: bool = False,
    ) -> list[Violation]:
        now = utcnow()
        found: list[Violation] = []
        for kind, name, label in self.scopes(user_id, team, project):
            quota = self.effective(db, kind, name, lock)
            if quota == Quota():
                continue
            found += check(label, quota, self.usage(db, kind, name, now), ask)
        return found

    def admit(self, db: Db, user_id: str, team: str | None, project: str | None, ask: Ask) -> None:
        """Refuse (403 ``quota_exceeded``) what any applicable quota does not allow.

        Called inside the reservation: the quota rows are locked before the usage is
        read, so two reservations under one quota cannot both pass it.
        """
        found = self.violations(db, user_id, team, project, ask, lock=True)
        if found:
            raise QuotaExceeded(
                "; ".join(v.message for v in found), waitable=all(v.waitable for v in found)
            )

    def check_ttl(self, user_id: str, team: str | None, project: str | None, ttl: int) -> None:
        """An extension within every ``max_ttl_minutes`` that applies."""
        with self.db.read() as db:
            for kind, name, label in self.scopes(user_id, team, project):
                limit = self.effective(db, kind, name).max_ttl_minutes
                if limit is not None and ttl > limit:
                    raise QuotaExceeded(
                        f"{label}: allows sessions of at most {limit} minutes, "
                        f"not {ttl} (max_ttl_minutes)"
                    )

    def report(self, user_id: str, team: str | None, project: str | None) -> list[dict[str, Any]]:
        """Each quota that applies to a user, with its limits and what is used now."""
        now = utcnow()
        out = []
        with self.db.read() as db:
            for kind, name, _ in self.scopes(user_id, team, project):
                usage = self.usage(db, kind, name, now)
                out.append(
                    {
                        "kind": kind.value,
                        "name": name,
                        "limits": to_limits(self.effective(db, kind, name)),
                        "used": {
                            "sessions": usage.sessions,
                            "slices": round(usage.slices, 3),
                            "gpu_hours_month": round(usage.gpu_hours_month, 3),
                        },
                    }
                )
        return out


def admission_check(quotas: Quotas) -> Any:
    """The quota check ``SessionService`` runs inside a reservation, once the request
    is placed: the slices counted are what it would really hold."""
    from sandman.gpu.types import Allocation, GpuDevice
    from sandman.policy.quotas import Priority
    from sandman.services.requests import SessionRequest

    def admit(
        db: Db,
        user_id: str,
        request: SessionRequest,
        ttl: int,
        image: str,
        allocations: list[Allocation],
        devices: list[GpuDevice],
    ) -> None:
        models = {d.uuid: d.model for d in devices}
        slices = sum(grant_slices(models.get(a.gpu_uuid), a.profile, a.share) for a in allocations)
        held: list[str | None] = [
            *sorted({models[a.gpu_uuid] for a in allocations if a.gpu_uuid in models})
        ]
        for model in held or [None]:
            ask = Ask(
                slices=slices,
                ttl_minutes=ttl,
                priority=Priority(request.priority),
                profile=allocations[0].profile if allocations else None,
                model=model,
                image=image,
            )
            quotas.admit(db, user_id, request.team, request.project, ask)

    return admit


def queue_check(quotas: Quotas) -> Any:
    """What ``SessionService`` runs before it queues a request: the quotas no wait
    would satisfy (a profile not allowed, a TTL too long, a request larger than the
    limit itself) refuse it now instead of letting it wait for nothing."""
    from sandman.gpu.types import GpuDevice
    from sandman.policy.quotas import Priority
    from sandman.policy.units import request_slices
    from sandman.services.requests import SessionRequest

    def check(
        db: Db,
        user_id: str,
        request: SessionRequest,
        ttl: int,
        image: str,
        devices: list[GpuDevice],
    ) -> None:
        ask = Ask(
            slices=request_slices(request.gpu, devices),
            ttl_minutes=ttl,
            priority=Priority(request.priority),
            profile=request.gpu.mig_profile,
            image=image,
        )
        found = quotas.violations(db, user_id, request.team, request.project, ask, lock=True)
        final = [v for v in found if not v.waitable]
        if final:
            raise QuotaExceeded("; ".join(v.message for v in final))

    return check
