"""``/healthz``: unauthenticated liveness with the reason when degraded."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from sandman import __version__
from sandman.api.routes.deps import sandman
from sandman.core import Sandman

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(app: Annotated[Sandman, Depends(sandman)]) -> JSONResponse:
    """``async`` and served from a result at most a second old, so it answers at once
    during a burst of work (see ``services/health.py``)."""
    report = await app.health.current()
    body: dict[str, Any] = {
        "status": "healthy" if report.healthy else "degraded",
        "service": "sandman",
        "version": __version__,
        "gpu_backend": app.inventory.backend,
        "simulated_gpus": app.inventory.simulated,
    }
    if not report.healthy:
        body["reasons"] = [f"{name}: {problem}" for name, problem in report.problems.items()]
    return JSONResponse(body, status_code=200 if report.healthy else 503)
