"""``/healthz``: unauthenticated liveness with the reason when degraded."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from sandman import __version__
from sandman.api.routes.deps import sandman
from sandman.core import Sandman
from sandman.errors import SandmanError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(app: Annotated[Sandman, Depends(sandman)]) -> JSONResponse:
    problems: list[str] = []
    try:
        app.db.ping()
    except Exception as exc:
        problems.append(f"database: {type(exc).__name__}: {exc}")
    try:
        app.runtime.ping()
    except SandmanError as exc:
        problems.append(f"docker: {exc.message}")
    body: dict[str, Any] = {
        "status": "degraded" if problems else "healthy",
        "service": "sandman",
        "version": __version__,
        "gpu_backend": app.inventory.backend,
        "simulated_gpus": app.inventory.simulated,
    }
    if problems:
        body["reasons"] = problems
    return JSONResponse(body, status_code=503 if problems else 200)
