"""``/quotas``: limits per user, team and project, and the defaults of each kind."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, field_validator

from sandman.accounts.policy import Action, Target, decide, require
from sandman.api.auth import Who, allow
from sandman.api.openapi import errors
from sandman.api.routes.deps import sandman
from sandman.api.schemas import UserIdPath, UtcTime
from sandman.core import Sandman
from sandman.policy.quotas import Priority, Quota, ScopeKind
from sandman.services.quotas import DEFAULTS

router = APIRouter(tags=["quotas"])
App = Annotated[Sandman, Depends(sandman)]
Kind = Literal["user", "team", "project"]
NamePath = Annotated[
    str,
    PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="A team or project."),
]
Names = Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=64)]
MANAGE = allow(Action.QUOTA_MANAGE)


class QuotaBody(BaseModel):
    """Limits; an absent field is no limit (or, on a user, team or project, the
    defaults of its kind)."""

    model_config = ConfigDict(extra="forbid")
    max_sessions: int | None = Field(None, ge=0, le=10_000)
    max_slices: float | None = Field(
        None, ge=0, le=100_000, description="Concurrent GPU slices, in sevenths of a GPU."
    )
    guaranteed_slices: float | None = Field(
        None, ge=0, le=100_000, description="Teams: slices protected from preemption."
    )
    max_ttl_minutes: int | None = Field(None, ge=1, le=10**6)
    max_gpu_hours_month: float | None = Field(None, ge=0, le=10**9)
    allowed_profiles: Names | None = None
    allowed_models: Names | None = None
    allowed_images: Names | None = None
    allowed_priorities: list[Priority] | None = Field(None, max_length=3)

    @field_validator(
        "max_sessions",
        "max_slices",
        "guaranteed_slices",
        "max_ttl_minutes",
        "max_gpu_hours_month",
        mode="before",
    )
    @classmethod
    def _numbers_only(cls, value: Any) -> Any:
        """A number, not ``true`` or ``"2"`` (which pydantic would take for 1 and 2)."""
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError("must be a number")
        return value

    def quota(self) -> Quota:
        def names(value: list[Any] | None) -> frozenset[str] | None:
            return None if value is None else frozenset(str(v) for v in value)

        return Quota(
            max_sessions=self.max_sessions,
            max_slices=self.max_slices,
            guaranteed_slices=self.guaranteed_slices,
            max_ttl_minutes=self.max_ttl_minutes,
            max_gpu_hours_month=self.max_gpu_hours_month,
            allowed_profiles=names(self.allowed_profiles),
            allowed_models=names(self.allowed_models),
            allowed_images=names(self.allowed_images),
            allowed_priorities=names(self.allowed_priorities),
        )


class QuotaOut(BaseModel):
    kind: str
    name: str = Field(description="The user, team or project; * for the defaults.")
    limits: dict[str, Any]
    updated_at: UtcTime


class AppliedOut(BaseModel):
    kind: str
    name: str
    limits: dict[str, Any] = Field(description="What applies: its own, over the defaults.")
    used: dict[str, float]


class QuotasOut(BaseModel):
    quotas: list[QuotaOut] = Field(description="Quotas set (operators: all).")
    applied: list[AppliedOut] = Field(description="What applies to the user, and their use.")


@router.put(
    "/quotas/defaults/{kind}",
    name="quota.defaults",
    response_model=QuotaOut,
    responses=errors(403),
    dependencies=[MANAGE],
)
def put_defaults(kind: Kind, body: QuotaBody, app: App) -> dict[str, Any]:
    """The limits every user, team or project has unless its own quota says otherwise."""
    return asdict(app.quotas.put(ScopeKind(kind), DEFAULTS, body.quota()))


def _routes_of(kind: ScopeKind, name_type: Any) -> None:
    """PUT and DELETE ``/quotas/<kind>/{name}``, the name checked as its kind's."""

    def put_quota(name: str, body: QuotaBody, app: App) -> dict[str, Any]:
        return asdict(app.quotas.put(kind, name, body.quota()))

    def delete_quota(name: str, app: App) -> dict[str, Any]:
        app.quotas.delete(kind, name)
        return {"message": f"quota of {kind.value} {name} removed; the defaults apply"}

    put_quota.__doc__ = f"Set one {kind.value}'s quota (replacing what was set)."
    # The name's type depends on the kind (annotations are strings here: set them).
    put_quota.__annotations__.update(name=name_type, body=QuotaBody, app=App)
    delete_quota.__annotations__.update(name=name_type, app=App)
    router.put(
        f"/quotas/{kind.value}/{{name}}",
        name="quota.put",
        response_model=QuotaOut,
        responses=errors(403),
        dependencies=[MANAGE],
        operation_id=f"put_{kind.value}_quota",
    )(put_quota)
    router.delete(
        f"/quotas/{kind.value}/{{name}}",
        name="quota.delete",
        responses=errors(403, 404),
        dependencies=[MANAGE],
        operation_id=f"delete_{kind.value}_quota",
    )(delete_quota)


_routes_of(ScopeKind.USER, UserIdPath)
_routes_of(ScopeKind.TEAM, NamePath)
_routes_of(ScopeKind.PROJECT, NamePath)


@router.get("/quotas", name="quota.list", response_model=QuotasOut, responses=errors(403))
def list_quotas(
    app: App,
    caller: Who,
    user_id: Annotated[
        str | None, Query(max_length=32, description="Whose (default: yours)")
    ] = None,
    team: Annotated[str | None, Query(max_length=64)] = None,
    project: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Operators and admins: every quota. Users: what applies to them."""
    owner = user_id or caller.user_id
    applied: list[dict[str, Any]] = []
    if owner is not None:
        require(caller, Action.QUOTA_READ, Target(owner=owner))
        applied = app.quotas.report(owner, team, project)
    if decide(caller, Action.QUOTA_MANAGE).allowed:
        quotas = app.quotas.list_quotas()
    else:
        keys = [(ScopeKind(a["kind"]), a["name"]) for a in applied]
        keys += [(ScopeKind(a["kind"]), DEFAULTS) for a in applied]
        quotas = app.quotas.list_quotas(keys)
    return {"quotas": [asdict(q) for q in quotas], "applied": applied}
