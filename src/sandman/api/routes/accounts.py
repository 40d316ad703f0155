"""``/users`` (create, read, change, disable) and ``/me``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from sandman.accounts.directory import EMAIL_PATTERN, UserChanges, UserView
from sandman.accounts.policy import Action, Role, Target, require
from sandman.api.auth import Who, allow
from sandman.api.openapi import errors
from sandman.api.routes.deps import sandman
from sandman.api.schemas import Name, UserId, UserIdPath, UtcTime
from sandman.core import Sandman

router = APIRouter(tags=["accounts"])
App = Annotated[Sandman, Depends(sandman)]
Status = Literal["active", "disabled"]


class UserFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    display_name: str | None = Field(None, max_length=128)
    email: str | None = Field(
        None, max_length=254, pattern=EMAIL_PATTERN, description="An e-mail address."
    )
    role: Role | None = Field(None, description="admin, operator or user (admins only).")
    default_team: Name | None = Field(None, description="A team the user is a member of.")
    default_project: Name | None = Field(None, description="A project of such a team.")


class CreateUserBody(UserFields):
    user_id: UserId


class UpdateUserBody(UserFields):
    status: Status | None = Field(None, description="active, or disabled (as DELETE does).")


class UserOut(BaseModel):
    user_id: str
    uid: int
    display_name: str | None
    email: str | None
    role: str
    status: str
    created_at: UtcTime
    last_seen_at: UtcTime | None
    teams: dict[str, str] = Field(description="Team -> member or lead.")
    default_team: str | None
    default_project: str | None
    sso: bool = Field(description="Bound to a single sign-on identity.")


class MeOut(UserOut):
    via: str = Field(description="bootstrap, token or cookie")
    token_name: str | None
    scopes: list[str]
    projects: list[str] = Field(description="Projects of the caller's teams.")
    csrf_token: str | None = Field(
        None, description="With a login cookie: send it as X-CSRF-Token on changes."
    )
    quotas: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The quotas that apply (user, default team and project) and their use.",
    )


def _out(user: UserView) -> dict[str, Any]:
    out = asdict(user)
    out.pop("extra", None)
    return out


def _changes(body: UserFields, status: str | None = None) -> UserChanges:
    return UserChanges(
        display_name=body.display_name,
        email=body.email,
        role=body.role,
        status=status,
        default_team=body.default_team,
        default_project=body.default_project,
    )


def _target(app: Sandman, user_id: str) -> Target:
    return Target(owner=user_id, role=app.accounts.directory.role_of(user_id))


@router.post(
    "/users",
    name="user.create",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses=errors(403, 404, 409),
)
def create_user(body: CreateUserBody, app: App, caller: Who) -> dict[str, Any]:
    """Create a user (operators and admins; only admins give a role other than user).
    A default team or project makes the user a member of that team."""
    require(caller, Action.USER_CREATE)
    if body.role not in (None, Role.USER):
        require(caller, Action.USER_SET_ROLE)
    return _out(app.accounts.directory.create(body.user_id, _changes(body)))


@router.get(
    "/users",
    name="user.list",
    response_model=list[UserOut],
    dependencies=[allow(Action.USER_LIST)],
)
def list_users(
    app: App,
    status: Annotated[Status | None, Query(description="active or disabled")] = None,
) -> list[dict[str, Any]]:
    return [_out(u) for u in app.accounts.directory.list_users(status)]


@router.get("/users/{user_id}", name="user.read", response_model=UserOut, responses=errors(404))
def get_user(user_id: UserIdPath, app: App, caller: Who) -> dict[str, Any]:
    require(caller, Action.USER_READ, Target(owner=user_id))
    return _out(app.accounts.directory.get(user_id))


@router.patch(
    "/users/{user_id}",
    name="user.update",
    response_model=UserOut,
    responses=errors(403, 404),
)
def update_user(
    user_id: UserIdPath, body: UpdateUserBody, app: App, caller: Who, request: Request
) -> dict[str, Any]:
    """Change a user; a user changes their own name, e-mail and defaults."""
    target = _target(app, user_id)
    require(caller, Action.USER_UPDATE, target)
    if body.role is not None:
        require(caller, Action.USER_SET_ROLE, target)
    if body.status is not None:
        require(caller, Action.USER_DISABLE, target)
    request.state.audit_detail = {
        k: v for k, v in body.model_dump(exclude_none=True).items() if k in ("role", "status")
    }
    return _out(app.accounts.directory.update(user_id, _changes(body, body.status)))


@router.delete(
    "/users/{user_id}",
    name="user.disable",
    response_model=UserOut,
    responses=errors(403, 404),
)
def disable_user(user_id: UserIdPath, app: App, caller: Who) -> dict[str, Any]:
    """Disable the user: their sessions end, their tokens and logins are revoked, and
    their workspace and uid are kept (nothing deletes a user)."""
    require(caller, Action.USER_DISABLE, _target(app, user_id))
    return _out(app.accounts.directory.disable(user_id))


@router.get("/me", name="me", response_model=MeOut)
def me(app: App, caller: Who, request: Request) -> dict[str, Any]:
    """Who the caller is: role, teams, projects, how they authenticated."""
    if caller.user_id is None:
        out: dict[str, Any] = {
            "user_id": caller.actor,
            "uid": 0,
            "display_name": "the bootstrap admin token",
            "email": None,
            "role": caller.role.value,
            "status": "active",
            "created_at": app.accounts.bootstrap_since,
            "last_seen_at": None,
            "teams": {},
            "default_team": None,
            "default_project": None,
            "sso": False,
        }
    else:
        out = _out(app.accounts.directory.get(caller.user_id))
    out["via"] = caller.via
    out["token_name"] = caller.token_name
    out["scopes"] = sorted(s.value for s in caller.scopes)
    out["projects"] = [p.name for p in app.accounts.teams.list_projects(caller)]
    out["csrf_token"] = getattr(request.state, "csrf_token", None)
    if caller.user_id is not None:
        out["quotas"] = app.quotas.report(
            caller.user_id, out["default_team"], out["default_project"]
        )
    return out
