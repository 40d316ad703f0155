"""``/metrics`` for Prometheus, and the metrics history of a session or a GPU.

``/metrics`` sits outside ``/api/v1`` and outside the OpenAPI document: it
answers Prometheus' text format, not JSON, and its own access rule
(``observe.access``), not the API's credentials.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from sandman.accounts.policy import Action, Target, require_visible
from sandman.api.auth import Who, allow
from sandman.api.openapi import errors
from sandman.api.routes.deps import sandman
from sandman.api.schemas import UtcTime
from sandman.core import Sandman
from sandman.errors import NotFound
from sandman.observe.access import PROXY_HEADERS, check_metrics_access
from sandman.observe.history import Point, window
from sandman.observe.registry import CONTENT_TYPE
from sandman.store.models import utcnow

router = APIRouter(tags=["metrics"])
scrape_router = APIRouter()
App = Annotated[Sandman, Depends(sandman)]

Since = Annotated[
    datetime | None,
    Query(description="Start of the window (ISO 8601; default: a day before `until`)."),
]
Until = Annotated[datetime | None, Query(description="End of the window (default: now).")]


class MetricPointOut(BaseModel):
    minute: UtcTime = Field(description="The minute's start (UTC).")
    samples: int = Field(description="Measurements averaged into this minute.")
    gpu_util: float | None = Field(description="GPU utilisation, percent (whole GPUs only).")
    gpu_active: float | None = Field(description="GPU engine activity, 0-1.")
    cpu_percent: float | None = Field(description="CPU, percent of one core (sessions).")
    fb_used_mib: float | None = Field(description="GPU memory used, MiB.")
    temperature_c: float | None = Field(description="GPU temperature, °C (GPUs).")
    power_w: float | None = Field(description="GPU power draw, W (GPUs).")


class MetricHistoryOut(BaseModel):
    kind: Literal["session", "gpu"]
    key: str = Field(description="The session's id or the GPU's UUID.")
    since: UtcTime
    until: UtcTime
    interval_seconds: int = Field(60, description="Each point averages this long.")
    points: list[MetricPointOut] = Field(description="Measured minutes, oldest first.")


def _history(
    app: Sandman,
    kind: Literal["session", "gpu"],
    key: str,
    since: datetime | None,
    until: datetime | None,
) -> dict[str, Any]:
    start, end = window(since, until, utcnow())
    points: list[Point] = app.metrics.history.points(kind, key, start, end)
    return {
        "kind": kind,
        "key": key,
        "since": start,
        "until": end,
        "points": [
            {
                "minute": p.minute,
                "samples": p.samples,
                "gpu_util": p.gpu_util,
                "gpu_active": p.gpu_active,
                "cpu_percent": p.cpu_percent,
                "fb_used_mib": p.fb_used_mib,
                "temperature_c": p.temperature_c,
                "power_w": p.power_w,
            }
            for p in points
        ],
    }


@router.get(
    "/sessions/{session_id}/metrics",
    name="session.metrics",
    response_model=MetricHistoryOut,
    responses=errors(404),
)
def session_metrics(
    session_id: str, app: App, caller: Who, since: Since = None, until: Until = None
) -> dict[str, Any]:
    """One-minute averages of the session's GPU activity, CPU and GPU memory (kept for
    ``SANDMAN_METRICS_RETENTION``); whoever may read the session may read them."""
    row = app.sessions.get(session_id)
    require_visible(
        caller,
        Action.SESSION_READ,
        Target(owner=row.user_id, team=row.team),
        f"session {session_id!r}",
    )
    return _history(app, "session", session_id, since, until)


@router.get(
    "/gpus/{gpu_uuid}/metrics",
    name="gpu.metrics",
    response_model=MetricHistoryOut,
    responses=errors(404),
    dependencies=[allow(Action.GPU_READ)],
)
def gpu_metrics(
    gpu_uuid: str, app: App, since: Since = None, until: Until = None
) -> dict[str, Any]:
    """One-minute averages of a GPU's utilisation, engine activity, memory, temperature
    and power. A MIG instance has none of its own: read its session's."""
    if not any(device.uuid == gpu_uuid for device in app.inventory.devices()):
        raise NotFound(f"no GPU {gpu_uuid!r} (a MIG instance's history is its session's)")
    return _history(app, "gpu", gpu_uuid, since, until)


@scrape_router.get("/metrics", name="metrics", include_in_schema=False)
async def scrape(request: Request, app: App) -> Response:
    """Prometheus' text format: the latest measurements and the service's counters."""
    client = request.client.host if request.client is not None else None
    forwarded = any(name in request.headers for name in PROXY_HEADERS)
    check_metrics_access(
        client, request.headers.get("authorization", ""), app.metrics.token, forwarded
    )
    gateway = app.gateway.state() if app.gateway is not None and app.gateway.listening else None
    body = await run_in_threadpool(app.metrics.registry.render, app.collector.latest(), gateway)
    return Response(body, media_type=CONTENT_TYPE)
