"""``/teams`` with their members, and ``/projects``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, status
from pydantic import BaseModel, ConfigDict, Field

from sandman.accounts.policy import Action, Target, require
from sandman.api.auth import Who, allow
from sandman.api.openapi import errors
from sandman.api.routes.deps import sandman
from sandman.api.schemas import Name, UserIdPath, UtcTime
from sandman.core import Sandman

router = APIRouter(tags=["teams"])
App = Annotated[Sandman, Depends(sandman)]
NamePath = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="A team or project name."),
]
MANAGE = allow(Action.TEAM_MANAGE)
MANAGE_PROJECTS = allow(Action.PROJECT_MANAGE)


class TeamBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    description: str | None = Field(None, max_length=1000)


class TeamPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(None, max_length=1000)


class MemberBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["member", "lead"] = "member"


class TeamOut(BaseModel):
    name: str
    description: str | None
    created_at: UtcTime
    members: dict[str, str] = Field(description="User -> member or lead.")
    projects: list[str]


class ProjectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    team: Name
    description: str | None = Field(None, max_length=1000)


class ProjectPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    team: Name | None = Field(None, description="Move the project to this team.")
    description: str | None = Field(None, max_length=1000)


class ProjectOut(BaseModel):
    name: str
    team: str
    description: str | None
    created_at: UtcTime


@router.post(
    "/teams",
    name="team.create",
    status_code=status.HTTP_201_CREATED,
    response_model=TeamOut,
    responses=errors(403, 409),
    dependencies=[MANAGE],
)
def create_team(body: TeamBody, app: App) -> dict[str, Any]:
    return asdict(app.accounts.teams.create_team(body.name, body.description))


@router.get("/teams", name="team.list", response_model=list[TeamOut])
def list_teams(app: App, caller: Who) -> list[dict[str, Any]]:
    """Every team for operators and admins; a user's own teams otherwise."""
    return [asdict(t) for t in app.accounts.teams.list_teams(caller)]


@router.get("/teams/{name}", name="team.read", response_model=TeamOut, responses=errors(404))
def get_team(name: NamePath, app: App, caller: Who) -> dict[str, Any]:
    team = app.accounts.teams.get_team(name)
    require(caller, Action.TEAM_READ, Target(team=name))
    return asdict(team)


@router.patch(
    "/teams/{name}",
    name="team.update",
    response_model=TeamOut,
    responses=errors(403, 404),
    dependencies=[MANAGE],
)
def update_team(name: NamePath, body: TeamPatch, app: App) -> dict[str, Any]:
    return asdict(app.accounts.teams.update_team(name, body.description))


@router.delete(
    "/teams/{name}",
    name="team.delete",
    responses=errors(403, 404, 409),
    dependencies=[MANAGE],
)
def delete_team(name: NamePath, app: App) -> dict[str, Any]:
    """Delete a team with no projects (its memberships go with it)."""
    app.accounts.teams.delete_team(name)
    return {"message": f"team {name} deleted"}


@router.put(
    "/teams/{name}/members/{user_id}",
    name="team.member_put",
    response_model=TeamOut,
    responses=errors(403, 404),
    dependencies=[MANAGE],
)
def put_member(name: NamePath, user_id: UserIdPath, body: MemberBody, app: App) -> dict[str, Any]:
    """Add the user to the team, or change their role in it (member or lead)."""
    return asdict(app.accounts.teams.put_member(name, user_id, body.role))


@router.delete(
    "/teams/{name}/members/{user_id}",
    name="team.member_delete",
    response_model=TeamOut,
    responses=errors(403, 404),
    dependencies=[MANAGE],
)
def delete_member(name: NamePath, user_id: UserIdPath, app: App) -> dict[str, Any]:
    return asdict(app.accounts.teams.delete_member(name, user_id))


@router.post(
    "/projects",
    name="project.create",
    status_code=status.HTTP_201_CREATED,
    response_model=ProjectOut,
    responses=errors(403, 404, 409),
    dependencies=[MANAGE_PROJECTS],
)
def create_project(body: ProjectBody, app: App) -> dict[str, Any]:
    return asdict(app.accounts.teams.create_project(body.name, body.team, body.description))


@router.get("/projects", name="project.list", response_model=list[ProjectOut])
def list_projects(
    app: App,
    caller: Who,
    team: Annotated[Name | None, Query(description="Only this team's projects")] = None,
) -> list[dict[str, Any]]:
    return [asdict(p) for p in app.accounts.teams.list_projects(caller, team)]


@router.get(
    "/projects/{name}", name="project.read", response_model=ProjectOut, responses=errors(404)
)
def get_project(name: NamePath, app: App, caller: Who) -> dict[str, Any]:
    project = app.accounts.teams.get_project(name)
    require(caller, Action.PROJECT_READ, Target(team=project.team))
    return asdict(project)


@router.patch(
    "/projects/{name}",
    name="project.update",
    response_model=ProjectOut,
    responses=errors(403, 404),
    dependencies=[MANAGE_PROJECTS],
)
def update_project(name: NamePath, body: ProjectPatch, app: App) -> dict[str, Any]:
    return asdict(app.accounts.teams.update_project(name, body.description, body.team))


@router.delete(
    "/projects/{name}",
    name="project.delete",
    responses=errors(403, 404, 409),
    dependencies=[MANAGE_PROJECTS],
)
def delete_project(name: NamePath, app: App) -> dict[str, Any]:
    """Delete a project no active session is charged to."""
    app.accounts.teams.delete_project(name)
    return {"message": f"project {name} deleted"}
