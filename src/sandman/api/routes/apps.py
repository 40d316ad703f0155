"""``POST /sessions/{id}/apps/{app}/open``: the portal's half of the apps handshake.

The answer is a URL on the apps origin carrying a one-time code; the browser goes
there, and the apps origin trades the code for a cookie of its own and sends it
on to the app (``sandman.web.apps_access``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from sandman.api.auth import Who
from sandman.api.openapi import errors
from sandman.api.routes.deps import sandman
from sandman.core import Sandman
from sandman.environments.apps import base_path
from sandman.errors import InvalidRequest
from sandman.web.apps_access import CODE_TTL, find_app

router = APIRouter(tags=["apps"])
App = Annotated[Sandman, Depends(sandman)]


class OpenAppOut(BaseModel):
    url: str = Field(
        description="Where to send the browser: the apps origin's /_open with a one-time code."
    )
    expires_in: int = Field(description="Seconds the code stays valid (it works once).")
    app: str
    path: str = Field(description="The app's path on the apps origin, once opened.")


@router.post(
    "/sessions/{session_id}/apps/{app}/open",
    name="session.app_open",
    response_model=OpenAppOut,
    responses=errors(404),
)
async def open_app(
    session_id: str, app: str, caller: Who, core: App, request: Request
) -> OpenAppOut:
    """A one-time link that opens the session's JupyterLab (``jupyterlab``) or VS
    Code (``vscode``) on the apps origin: for the session's owner only (admins too
    with ``SANDMAN_APPS_ADMIN_ACCESS``); anyone else gets 404."""
    apps_url = core.settings.effective_apps_url
    if apps_url is None:
        raise InvalidRequest(
            "this Sandman serves no apps origin: set SANDMAN_APPS_LISTEN or SANDMAN_APPS_URL"
        )
    request.state.audit_detail = {"app": app}
    found = find_app(app)
    code = await run_in_threadpool(core.apps.mint, caller, session_id, found.name)
    return OpenAppOut(
        url=f"{apps_url}/_open?code={code}",
        expires_in=int(CODE_TTL.total_seconds()),
        app=found.name,
        path=base_path(session_id, found),
    )
