"""``/users/{user_id}/workspace``: what the user's workspace may hold, and holds."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from sandman.accounts.policy import Action, Target, require
from sandman.api.auth import Who
from sandman.api.openapi import errors
from sandman.api.routes.deps import sandman
from sandman.api.schemas import UserIdPath, WholeNumber, WorkspaceQuotaOut
from sandman.core import Sandman
from sandman.domain import MAX_WORKSPACE_QUOTA, MIN_WORKSPACE_QUOTA

router = APIRouter(tags=["users"])
App = Annotated[Sandman, Depends(sandman)]


class WorkspaceQuotaBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quota_bytes: WholeNumber = Field(
        ge=MIN_WORKSPACE_QUOTA,
        le=MAX_WORKSPACE_QUOTA,
        description="What the workspace may hold, in bytes (64 MiB to 16 TiB).",
    )


class WorkspaceOut(WorkspaceQuotaOut):
    user_id: str
    storage: str | None = Field(
        description="How the workspace is kept: image (a file system of its own, the quota "
        "enforced) or directory (no limit until `sandman workspaces migrate`); null when "
        "the user has no workspace yet."
    )
    own_quota: bool = Field(description="The user's own quota, not the server's default.")


@router.get(
    "/users/{user_id}/workspace",
    name="workspace.read",
    response_model=WorkspaceOut,
    responses=errors(403, 404),
)
def get_workspace(user_id: UserIdPath, app: App, caller: Who) -> dict[str, Any]:
    """The user's workspace quota and what the workspace holds (a user: their own)."""
    require(caller, Action.WORKSPACE_READ, Target(owner=user_id))
    return asdict(app.workspaces.get(user_id))


@router.put(
    "/users/{user_id}/workspace",
    name="workspace.quota",
    response_model=WorkspaceOut,
    responses=errors(403, 409, 503),
)
def put_workspace(
    user_id: UserIdPath, body: WorkspaceQuotaBody, app: App, caller: Who
) -> dict[str, Any]:
    """Give the user a quota of their own, applied at once to their workspace: it grows
    while a session runs; it shrinks only while none does (409 otherwise), and never
    below what the workspace holds (409). A user with no workspace yet gets it when
    their first session makes one. Operators and admins."""
    require(caller, Action.WORKSPACE_QUOTA, Target(owner=user_id))
    return asdict(app.workspaces.set_quota(user_id, body.quota_bytes))
