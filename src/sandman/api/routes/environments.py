"""``/environments``: what a session can start from (image, apps, allowed teams)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from sandman.accounts.policy import Action, Caller, decide
from sandman.api.auth import Who, allow
from sandman.api.openapi import errors
from sandman.api.routes.deps import sandman
from sandman.core import Sandman
from sandman.environments.model import (
    APP_NAMES,
    IMAGE_PATTERN,
    NAME_PATTERN,
    PROFILE_PATTERN,
    TEAM_PATTERN,
    Environment,
    allowed,
    environment_out,
)
from sandman.errors import NotFound

router = APIRouter(tags=["environments"])
App = Annotated[Sandman, Depends(sandman)]
NamePath = Annotated[str, Path(pattern=NAME_PATTERN.pattern, description="An environment's name.")]
MANAGE = allow(Action.ENVIRONMENT_MANAGE)
APPS_DOC = f"What it offers: {', '.join(APP_NAMES)} (the shell always)."


ImageRef = Annotated[str, StringConstraints(pattern=IMAGE_PATTERN.pattern, max_length=255)]
TeamName = Annotated[str, StringConstraints(pattern=TEAM_PATTERN.pattern)]
AppName = Literal["shell", "jupyterlab", "vscode"]


class EnvironmentFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: ImageRef = Field(None, description="The image sessions run.")  # type: ignore[assignment]
    description: str | None = Field(None, max_length=500)
    apps: list[AppName] | None = Field(None, description=APPS_DOC)
    default_profile: str | None = Field(
        None,
        description="The GPU profile a session gets when it asks for none.",
        pattern=PROFILE_PATTERN.pattern,
    )
    allowed_teams: list[TeamName] | None = Field(
        None, description="Teams whose members may use it; empty: everyone."
    )


class EnvironmentBody(EnvironmentFields):
    name: str = Field(pattern=NAME_PATTERN.pattern)
    image: ImageRef = Field(description="The image sessions run.")


class EnvironmentOut(BaseModel):
    name: str
    image: str
    description: str
    apps: list[str]
    default_profile: str | None
    allowed_teams: list[str]
    builtin: bool


def _visible(app: Sandman, caller: Caller, environment: Environment) -> bool:
    if decide(caller, Action.ENVIRONMENT_READ_ALL).allowed:
        return True
    return allowed(environment, caller.teams)


def _given(body: BaseModel) -> dict[str, Any]:
    return body.model_dump(exclude_unset=True, exclude={"name"})


@router.get(
    "/environments",
    name="environment.list",
    response_model=list[EnvironmentOut],
    dependencies=[allow(Action.ENVIRONMENT_READ)],
)
def list_environments(app: App, caller: Who) -> list[dict[str, Any]]:
    """The environments the caller may start sessions from (operators and admins: all)."""
    return [
        environment_out(environment)
        for environment in app.environments.all().values()
        if _visible(app, caller, environment)
    ]


@router.get(
    "/environments/{name}",
    name="environment.read",
    response_model=EnvironmentOut,
    responses=errors(404),
    dependencies=[allow(Action.ENVIRONMENT_READ)],
)
def get_environment(name: NamePath, app: App, caller: Who) -> dict[str, Any]:
    environment = app.environments.get(name)
    if not _visible(app, caller, environment):
        raise NotFound(f"no environment {name!r}")
    return environment_out(environment)


@router.post(
    "/environments",
    name="environment.create",
    status_code=status.HTTP_201_CREATED,
    response_model=EnvironmentOut,
    responses=errors(403, 409),
    dependencies=[MANAGE],
)
async def create_environment(body: EnvironmentBody, app: App, request: Request) -> dict[str, Any]:
    """Register an environment for an image that exists on the engine (or will):
    ``sandman env build`` builds only the built-ins' images."""
    environment = await run_in_threadpool(app.environments.create, body.name, _given(body))
    request.state.audit_target = body.name
    return environment_out(environment)


@router.patch(
    "/environments/{name}",
    name="environment.update",
    response_model=EnvironmentOut,
    responses=errors(403, 404),
    dependencies=[MANAGE],
)
async def update_environment(
    name: NamePath, body: EnvironmentFields, app: App, request: Request
) -> dict[str, Any]:
    """Change the given fields; a built-in's changes are kept until it is deleted."""
    environment = await run_in_threadpool(app.environments.update, name, _given(body))
    request.state.audit_target = name
    return environment_out(environment)


@router.delete(
    "/environments/{name}",
    name="environment.delete",
    responses=errors(403, 404, 409),
    dependencies=[MANAGE],
)
async def delete_environment(name: NamePath, app: App, request: Request) -> dict[str, Any]:
    """Remove a registered environment (a changed built-in returns to its defaults;
    a built-in itself stays: 409). Sessions already running keep their image."""
    await run_in_threadpool(app.environments.delete, name)
    request.state.audit_target = name
    return {"message": f"environment {name} removed"}
