"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from sandman import __version__
from sandman.api.auth import require_admin
from sandman.api.errors import install_error_handlers
from sandman.api.routes import gpus, health, sessions, users
from sandman.core import Sandman

API_PREFIX = "/api/v1"


def create_app(core: Sandman, run_background: bool = True) -> FastAPI:
    """The API over one ``Sandman``; ``run_background`` starts reaper and reconciler."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await core.start_gateway()
        if run_background:
            # Start-up reconciliation talks to Docker: keep it off the event loop,
            # which the gateway needs to serve while it runs.
            await asyncio.to_thread(core.start_background)
        try:
            yield
        finally:
            await core.stop_gateway()

    app = FastAPI(
        title="Sandman",
        version=__version__,
        description="Per-user GPU containers with a MIG slice, a workspace and SSH.",
        lifespan=lifespan,
    )
    app.state.sandman = core
    install_error_handlers(app)
    if core.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=core.settings.cors_origins,
            allow_credentials=True,
            allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.include_router(health.router)
    protected = APIRouter(dependencies=[Depends(require_admin)])
    protected.include_router(sessions.router)
    protected.include_router(gpus.router)
    protected.include_router(users.router)
    app.include_router(protected, prefix=API_PREFIX)
    # The seed documents' clients call the same routes without the prefix.
    app.include_router(protected, include_in_schema=False)
    return app
