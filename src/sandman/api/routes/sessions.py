"""``/sessions``: create, read, extend and end sessions."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from sandman.accounts.policy import (
    Action,
    Caller,
    Target,
    decide,
    require,
    require_visible,
    session_visibility,
)
from sandman.api.auth import Who, allow
from sandman.api.openapi import errors
from sandman.api.routes.deps import sandman
from sandman.api.schemas import (
    STATUS_FILTERS,
    USER_ID_DOC,
    USER_ID_SCHEMA,
    CreatedSessionOut,
    CreateSessionBody,
    ExtendSessionBody,
    SessionOut,
    session_out,
)
from sandman.core import Sandman
from sandman.domain import SessionStatus
from sandman.errors import CapacityExhausted, SandmanError
from sandman.gpu.planner import free_summary
from sandman.gpu.types import GpuRequest
from sandman.services.requests import SessionRequest
from sandman.services.session_state import restored_request
from sandman.store.models import Session as SessionRow

log = logging.getLogger(__name__)
router = APIRouter(tags=["sessions"])
App = Annotated[Sandman, Depends(sandman)]


def _outs(app: Sandman, rows: list[SessionRow]) -> list[dict[str, Any]]:
    quotas = app.workspaces.summaries(row.user_id for row in rows)
    outs = [
        session_out(
            row,
            app.settings,
            app.workspace_location(row.user_id),
            app.inventory.simulated,
            app.gateway_port,
            app.gateway_host_key,
            quotas[row.user_id],
        )
        for row in rows
    ]
    urls = app.environments.app_urls(rows)
    for out in outs:
        out["apps"] = urls.get(out["id"], {})
    if any(row.status == SessionStatus.QUEUED for row in rows):
        view = app.queue.view()
        for out in outs:
            entry = view.entry(out["id"])
            if entry is not None:
                out["queue_position"], out["eta"] = entry.position, entry.eta
    return outs


def _out(app: Sandman, row: SessionRow) -> dict[str, Any]:
    return _outs(app, [row])[0]


def _visible(app: Sandman, caller: Caller, session_id: str, action: Action) -> SessionRow:
    """The session, if the caller may do ``action`` on it; another user's session that
    the caller may not even read is 404, as if it did not exist."""
    row = app.sessions.get(session_id)
    require_visible(
        caller, action, Target(owner=row.user_id, team=row.team), f"session {session_id!r}"
    )
    return row


@router.post(
    "/sessions",
    name="session.create",
    status_code=status.HTTP_201_CREATED,
    response_model=CreatedSessionOut,
    responses={
        202: {
            "model": CreatedSessionOut,
            "description": "With ``wait=false``: the session is reserved and ``starting``; "
            "poll the ``Location`` header's URL until it is ``running``. With "
            "``queue: true`` and nothing free: the request is ``queued``, with "
            "``queue_position``, ``eta`` and ``reason``.",
        },
        **errors(403, 404, 409, 503),
    },
)
async def create_session(
    body: CreateSessionBody,
    app: App,
    caller: Who,
    request: Request,
    response: Response,
    wait: Annotated[
        bool,
        Query(description="true: answer 201 once sshd answers; false: 202 at once"),
    ] = True,
) -> dict[str, Any]:
    """Start a container for ``user_id`` (default: the caller); returns once its sshd
    accepts connections. Users start their own sessions; operators and admins anyone's."""
    user_id = app.accounts.session_owner(caller, body.user_id)
    require(caller, Action.SESSION_CREATE, Target(owner=user_id))
    source = None
    if body.restore is not None:  # an ended session of the user's: 404, or 409 if active
        source = await run_in_threadpool(app.states.source, user_id, body.restore)
    charge = await run_in_threadpool(
        app.accounts.prepare_session,
        caller,
        user_id,
        body.team or (source.team if source else None),
        body.project or (source.project if source else None),
    )
    asked = SessionRequest(
        user_id=user_id,
        ttl_minutes=body.ttl_minutes,
        gpu=GpuRequest(
            mig_profile=body.mig_profile,
            mig_instance_uuid=body.mig_instance_uuid,
            gpu_count=body.gpu_count,
            gpu_memory_gb=body.gpu_memory_gb,
            shared=body.shared,
        ),
        image=body.image,
        environment=body.environment,
        ssh_public_keys=body.ssh_public_keys,
        cpus=body.cpus,
        memory=body.memory,
        team=charge.team,
        project=charge.project,
        priority=body.priority,
        idle_timeout_minutes=body.idle_timeout_minutes,
        labels=dict(body.labels),
        queue=body.queue,
        workload_type=body.workload_type,
    )
    snapshot_note = None
    if source is not None:
        asked = restored_request(asked, source)
        asked, snapshot_note = await run_in_threadpool(
            app.snapshots.restore,
            asked,
            source,
            body.image is not None or body.environment is not None,
        )
    try:
        created = await app.creator.create(asked, wait_ready=wait)
    except CapacityExhausted as exc:
        await run_in_threadpool(_quote_eta, app, exc, asked)
        raise
    request.state.audit_target = created.session.id
    request.state.audit_detail = {"user_id": user_id, "team": charge.team}
    if created.session.status == SessionStatus.QUEUED:
        app.queue.wake()  # its place is in the view read below; a preemption may make room
    out = await asyncio.to_thread(_out, app, created.session)  # reads the disk
    out["ssh_private_key"] = created.private_key
    out["notes"] = list(created.notes)
    if source is not None:
        out["notes"].append(await run_in_threadpool(app.states.note, source))
        if snapshot_note is not None:
            out["notes"].append(snapshot_note)
    if not wait or created.session.status == SessionStatus.QUEUED:
        response.status_code = status.HTTP_202_ACCEPTED
        response.headers["Location"] = f"{request.url.path.rstrip('/')}/{created.session.id}"
    return out


def _quote_eta(app: Sandman, exc: CapacityExhausted, asked: SessionRequest) -> None:
    """A refusal for want of room says when the request would start had it queued."""
    try:
        eta = app.queue.eta_for(
            asked.user_id,
            asked.team,
            asked.priority,
            asked.gpu,
            asked.ttl_minutes or app.settings.default_ttl_minutes,
        )
    except SandmanError as failed:  # the answer stays the refusal
        log.warning("no ETA for a refused request: %s", failed.message)
        return
    now = app.queue.clock()
    exc.details = {"eta": eta.isoformat().replace("+00:00", "Z") if eta else None}
    wait = (eta - now).total_seconds() if eta is not None else 60.0
    exc.retry_after = min(max(wait, 1.0), 3600.0)
    hint = "ask with queue: true to wait in the queue"
    if eta is not None:
        exc.message += f"; it would start around {eta.strftime('%Y-%m-%d %H:%M')} UTC: {hint}"
    else:
        exc.message += f"; nothing known to end would make room yet: {hint}"


TOTAL_HEADER = {
    "X-Total-Count": {
        "description": "How many sessions match, whatever the page.",
        "schema": {"type": "integer"},
    }
}


@router.get(
    "/sessions",
    name="session.list",
    response_model=list[SessionOut],
    responses={200: {"headers": TOTAL_HEADER, "description": "One page of sessions."}},
)
def list_sessions(
    app: App,
    caller: Who,
    response: Response,
    status: Annotated[
        str,
        Query(
            description="active (default), all, or one status",
            json_schema_extra={"enum": STATUS_FILTERS},
        ),
    ] = "active",
    user_id: Annotated[
        str | None, Query(description=USER_ID_DOC, json_schema_extra=USER_ID_SCHEMA)
    ] = None,
    limit: Annotated[
        int | None, Query(ge=1, le=1000, description="At most this many (default: all)")
    ] = None,
    offset: Annotated[int, Query(ge=0, le=10**9, description="Skip this many first")] = 0,
) -> list[dict[str, Any]]:
    """Sessions oldest first (``created_at``, then ``id``); the total is in ``X-Total-Count``.
    ``active`` includes queued requests.

    Users see their own sessions (and a team lead the team's); operators and admins all.
    """
    visible = session_visibility(caller)
    rows, total = app.sessions.page(status, user_id, limit, offset, visible, queued=True)
    response.headers["X-Total-Count"] = str(total)
    return _outs(app, rows)


@router.get("/sessions/stats", name="session.stats", dependencies=[allow(Action.SESSION_STATS)])
def session_stats(app: App) -> dict[str, Any]:
    """Counts by status and profile, and GPU slices used and free."""
    active = app.sessions.list_sessions("active")
    by_profile: dict[str, int] = {}
    for row in active:
        key = row.mig_profile or ("whole-gpu" if row.gpu_uuid else "no-gpu")
        if row.gpu_share is not None:
            key = "shared"
        by_profile[key] = by_profile.get(key, 0) + 1
    return {
        "by_status": app.sessions.counts_by_status(),
        "active": len(active),
        "by_profile": by_profile,
        "gpus": free_summary(app.inventory.devices(), app.sessions.claims()),
    }


@router.get(
    "/sessions/{session_id}",
    name="session.read",
    response_model=SessionOut,
    responses=errors(404),
)
def get_session(session_id: str, app: App, caller: Who) -> dict[str, Any]:
    """One session; operators and admins also see why it was placed where it is."""
    row = _visible(app, caller, session_id, Action.SESSION_READ)
    out = _out(app, row)
    if decide(caller, Action.SESSION_LIST_ALL).allowed:
        out["placement_reason"] = row.placement_reason
    return out


@router.patch(
    "/sessions/{session_id}",
    name="session.extend",
    response_model=SessionOut,
    responses=errors(403, 404, 409),
)
def extend_session(
    session_id: str, body: ExtendSessionBody, app: App, caller: Who
) -> dict[str, Any]:
    """Set the TTL to ``ttl_minutes`` from now (capped by the maximum TTL)."""
    _visible(app, caller, session_id, Action.SESSION_EXTEND)
    return _out(app, app.sessions.extend(session_id, body.ttl_minutes))


@router.delete("/sessions/{session_id}", name="session.end", responses=errors(403, 404, 503))
def delete_session(session_id: str, app: App, caller: Who) -> dict[str, Any]:
    """End the session and reclaim container, GPU slice and port; idempotent. A queued
    request is cancelled (status ``cancelled``)."""
    _visible(app, caller, session_id, Action.SESSION_END)
    reason = "deleted through the API"
    if caller.user_id is not None:
        reason = f"deleted through the API by {caller.user_id}"
    row = app.sessions.end(session_id, SessionStatus.DELETED, reason, wait=True)
    return {"message": f"session {session_id} ended", "session": _out(app, row)}


@router.delete(
    "/sessions",
    name="session.end_all",
    responses=errors(403),
    dependencies=[allow(Action.SESSION_END_ALL)],
)
def delete_all_sessions(app: App) -> dict[str, Any]:
    """End every active session and cancel every queued request, ``delete_concurrency``
    at a time."""
    ended = app.sessions.end_all("all sessions deleted through the API")
    return {"message": f"{len(ended)} sessions ended", "ended": [row.id for row in ended]}
