"""``/healthz``: unauthenticated liveness; the reasons only for the admin."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from sandman import __version__
from sandman.api.auth import is_admin
from sandman.api.routes.deps import sandman
from sandman.core import Sandman

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    responses={503: {"description": "Degraded: a component is down (the body says which)."}},
)
async def healthz(request: Request, app: Annotated[Sandman, Depends(sandman)]) -> JSONResponse:
    """``healthy`` (200) or ``degraded`` (503), with each component ``ok`` or ``down``.

    ``async`` and served from a result at most a second old, so it answers at once
    during a burst of work (see ``services/health.py``). What went wrong is in the
    log, and in ``reasons`` for a caller with the admin token: it can name hosts,
    paths and versions that anyone else has no business seeing.
    """
    report = await app.health.current()
    components = {name: "down" if name in report.problems else "ok" for name in app.health.checks}
    if app.gateway is None:
        components.pop("gateway", None)
    body: dict[str, Any] = {
        "status": "healthy" if report.healthy else "degraded",
        "service": "sandman",
        "version": __version__,
        "components": components,
        "gpu_backend": app.inventory.backend,
        "simulated_gpus": app.inventory.simulated,
    }
    if not report.healthy and is_admin(request):
        body["reasons"] = [f"{name}: {problem}" for name, problem in report.problems.items()]
    return JSONResponse(body, status_code=200 if report.healthy else 503)
