"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from sandman import __version__
from sandman.api.auth import authenticate
from sandman.api.context import RequestContext
from sandman.api.errors import install_error_handlers
from sandman.api.http_metrics import HttpMetrics
from sandman.api.openapi import Limits, errors, install_openapi
from sandman.api.routes import (
    accounts,
    apps,
    budgets,
    capacity,
    environments,
    gpus,
    health,
    metrics,
    notifications,
    queue,
    quotas,
    seed_gpu,
    sessions,
    sso,
    teams,
    tokens,
    usage,
    users,
    workspaces,
)
from sandman.core import Sandman
from sandman.gpu.catalogue import find_model
from sandman.gpu.types import MigMode
from sandman.observe.idle import idle_timeout_range
from sandman.web.portal import install_portal

API_PREFIX = "/api/v1"
SEED_003_PREFIX = "/k8s-monitor/api/v1"  # seed 003's clients call under its context path


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
        docs_url=None,  # served below from the installed package, not a CDN
        redoc_url=None,
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
    app.include_router(metrics.scrape_router)  # /metrics: Prometheus' text, its own access rule
    app.include_router(sso.router)  # /auth: single sign-on, for browsers and the CLI
    protected = APIRouter(
        dependencies=[Depends(authenticate)], responses=errors(400, 401, 403, 500)
    )
    protected.include_router(sessions.router)
    protected.include_router(gpus.router)
    protected.include_router(metrics.router)
    protected.include_router(users.router)
    protected.include_router(workspaces.router)
    protected.include_router(accounts.router)
    protected.include_router(teams.router)
    protected.include_router(environments.router)
    protected.include_router(tokens.router)
    protected.include_router(quotas.router)
    protected.include_router(queue.router)
    protected.include_router(budgets.router)
    protected.include_router(capacity.router)
    protected.include_router(notifications.router)
    protected.include_router(usage.router)
    protected.include_router(seed_gpu.router)
    protected.include_router(apps.router)  # the portal's half of the apps handshake
    app.include_router(protected, prefix=API_PREFIX)
    # The seed documents' clients call the same routes without the prefix, and seed
    # 003's under its application's context path.
    app.include_router(protected, include_in_schema=False)
    app.include_router(protected, prefix=SEED_003_PREFIX, include_in_schema=False)
    # Alertmanager's webhook carries a secret of its own, not a user's credential.
    app.include_router(notifications.alerts_router, prefix=API_PREFIX)
    app.include_router(notifications.alerts_router, include_in_schema=False)
    install_openapi(app, request_limits(core))
    install_docs(app)
    install_portal(app)  # /ui/, and / and /k8s-monitor sending browsers there
    app.add_middleware(HttpMetrics, sink=core.metrics.service)
    app.add_middleware(RequestContext, core=core)
    return app


def request_limits(core: Sandman) -> Limits:
    """What a session request may ask for on this server: its settings and its GPUs."""
    profiles: set[str] = set()
    largest_gb = 0.0
    whole = 0  # GPUs handed out whole (MIG off)
    for device in core.inventory.devices():
        largest_gb = max(largest_gb, device.memory_total_mb / 1024)
        whole += device.mig_mode == MigMode.DISABLED
        model = find_model(device.model)
        if model is not None and model.mig_capable and device.mig_mode != MigMode.DISABLED:
            profiles.update(profile.name for profile in model.profiles)
    ttl = {"minimum": 1, "maximum": core.settings.max_ttl_minutes}
    environments = core.environments.all()  # as registered when the server started
    images = {environment.image for environment in environments.values()}
    idle_low, idle_top = idle_timeout_range(
        core.settings.idle_timeout_max, core.settings.max_ttl_minutes
    )
    return {
        ("CreateSessionBody", "idle_timeout_minutes"): {"minimum": idle_low, "maximum": idle_top},
        ("CreateSessionBody", "ttl_minutes"): ttl,
        ("ExtendSessionBody", "ttl_minutes"): ttl,
        ("CreateSessionBody", "image"): {"enum": sorted({*core.settings.allowed_images, *images})},
        ("CreateSessionBody", "environment"): {"enum": sorted(environments)},
        ("CreateSessionBody", "mig_profile"): {"enum": sorted(profiles)},
        ("CreateSessionBody", "cpus"): {"minimum": 0.01, "maximum": float(os.cpu_count() or 1)},
        ("CreateSessionBody", "gpu_count"): {"minimum": 0, "maximum": whole},
        ("CreateSessionBody", "gpu_memory_gb"): {
            "exclusiveMinimum": 0,
            "maximum": math.floor(largest_gb),
        },
        ("AllocationBody", "requiredMemoryGb"): {
            "exclusiveMinimum": 0,
            "maximum": math.floor(largest_gb),
        },
    }


def install_docs(app: FastAPI) -> None:
    """``/docs`` with Swagger UI's files from the installed package, so the page works
    on a machine with no way out (FastAPI's default loads them from a CDN)."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs/assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="Sandman API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )
