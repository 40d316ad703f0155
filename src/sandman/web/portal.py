"""The portal under ``/ui/``: logging in, and a user's sessions.

Pages are rendered on the server (Jinja2); htmx refreshes their live parts by
polling fragments, and a small script of our own draws the charts (uPlot) and
runs the countdowns. Routes translate: the services decide and ``decide``
(``accounts.policy``) says who may do what. ``install_portal`` mounts it all.
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
import time
import weakref
from datetime import UTC, datetime
from typing import Any, cast

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from sandman.accounts.oidc import check_next
from sandman.accounts.policy import Action, Caller, Target, decide, require, require_visible
from sandman.api.schemas import session_out
from sandman.core import Sandman
from sandman.domain import SessionStatus
from sandman.errors import Forbidden, InvalidRequest, SandmanError
from sandman.gpu.planner import free_summary
from sandman.gpu.types import GpuRequest
from sandman.services.requests import SessionRequest
from sandman.services.session_state import restored_request
from sandman.store.models import Session as SessionRow
from sandman.web.portal_base import (
    LOGIN_FORM_COOKIE,
    PREFIX,
    STATIC,
    PortalRoute,
    Seen,
    Viewer,
    core_of,
    form_of,
    redirect,
    render,
    secure_cookies,
    set_login,
)
from sandman.web.portal_views import (
    idle_state,
    profile_choices,
    seconds_until,
    ssh_config,
)

router = APIRouter(prefix=PREFIX, route_class=PortalRoute, include_in_schema=False)
BASE = "base"
RESTORABLE = 10  # ended sessions offered for restore on the home page


def install_portal(app: FastAPI) -> None:
    """The portal's routes, its static files, and ``/`` (and seed 003's context
    path, ``/k8s-monitor``) sending browsers to it."""
    from sandman.web import (  # they use this module's views
        portal_account,
        portal_admin,
        portal_manage,
    )

    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(STATIC)), name="portal-static")
    app.include_router(router)
    app.include_router(portal_account.router)
    app.include_router(portal_admin.router)
    app.include_router(portal_manage.router)

    async def to_portal() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    for path in ("/", "/k8s-monitor", "/k8s-monitor/"):
        app.add_api_route(path, to_portal, methods=["GET"], include_in_schema=False)
    app.add_api_route(PREFIX, to_portal, methods=["GET"], include_in_schema=False)


def now() -> datetime:
    return datetime.now(UTC)


def environments(core: Sandman, caller: Caller) -> list[dict[str, Any]]:
    """The environments the caller may start from: the environments service's, where
    this Sandman has one (those open to every team, or to one of the caller's)."""
    service: Any = getattr(core, "environments", None)
    if service is None:
        return [{"name": BASE, "description": "the workspace image", "apps": []}]
    found = []
    for environment in service.all().values():
        teams = set(environment.allowed_teams)
        if not teams or teams & set(caller.teams):
            found.append(
                {
                    "name": environment.name,
                    "description": environment.description,
                    "apps": list(environment.web_apps),
                }
            )
    return found


def session_apps(core: Sandman, row: SessionRow, out: dict[str, Any]) -> dict[str, str]:
    """The web apps the session's environment offers (name -> URL), if any."""
    listed = out.get("apps")
    if listed:
        return dict(listed)
    service: Any = getattr(core, "environments", None)
    if service is None or not hasattr(service, "app_urls"):
        return {}
    return dict(service.app_urls([row]).get(row.id, {}))


# -- logging in ------------------------------------------------------------------------
@router.get("/login", name="portal.login_page")
async def login_page(request: Request, next: str | None = None) -> Response:
    core = core_of(request)
    form_secret = request.cookies.get(LOGIN_FORM_COOKIE) or secrets.token_urlsafe(24)
    target = _next(next)
    response = render(
        request,
        "login.html",
        {"sso": core.sso is not None, "next": target, "form_csrf": form_secret},
    )
    response.set_cookie(
        LOGIN_FORM_COOKIE,
        form_secret,
        max_age=3600,
        path=f"{PREFIX}/login",
        secure=secure_cookies(core),
        httponly=True,
        samesite="strict",
    )
    return response


def _next(value: str | None) -> str:
    try:
        found = check_next(value) if value else f"{PREFIX}/"
    except InvalidRequest:
        return f"{PREFIX}/"
    return found if found.startswith(f"{PREFIX}/") else f"{PREFIX}/"


@router.post("/login", name="auth.login_token")
async def login_with_token(request: Request) -> Response:
    """A personal token pasted into the form becomes a login cookie, as single sign-on's
    would; the form carries its own CSRF secret (double submit), as nobody is logged in."""
    core = core_of(request)
    form = await form_of(request)
    expected = request.cookies.get(LOGIN_FORM_COOKIE, "")
    sent = form.get("csrf_token", "")
    if not expected or not secrets.compare_digest(sent.encode(), expected.encode()):
        raise Forbidden("the login form's CSRF token is missing or wrong: reload the page")
    target = _next(form.get("next"))
    try:
        login = await run_in_threadpool(
            core.credentials.login_with_token, form.get("token", "").strip()
        )
    except SandmanError as exc:
        return redirect(request, f"{PREFIX}/login?next={target}", exc.message, "error")
    response = redirect(request, target)
    max_age = int((login.expires_at - now()).total_seconds())
    set_login(response, core, login.secret, login.csrf_token, max_age)
    response.delete_cookie(LOGIN_FORM_COOKIE, path=f"{PREFIX}/login")
    return response


# -- a user's sessions -------------------------------------------------------------------
def _active(core: Sandman, user_id: str) -> list[dict[str, Any]]:
    rows = core.sessions.list_sessions("active", user_id, queued=True)
    return session_rows(core, rows)


QUEUE_VIEW_TTL = 5.0  # seconds a simulated queue (positions, ETAs) is reused by pages
_queue_views: weakref.WeakKeyDictionary[Sandman, tuple[float, Any]] = weakref.WeakKeyDictionary()


def queue_view(core: Sandman) -> Any:
    """The queue with its ETAs, simulated at most every few seconds for the pages (the
    simulation replays every known end: seconds with hundreds of sessions)."""
    moment = time.monotonic()
    cached = _queue_views.get(core)
    if cached is not None and moment - cached[0] < QUEUE_VIEW_TTL:
        return cached[1]
    view = core.queue.view()
    _queue_views[core] = (moment, view)
    return view


def session_rows(core: Sandman, rows: list[SessionRow]) -> list[dict[str, Any]]:
    """Rows as the lists show them: the row, its countdown, and its place in the queue."""
    moment = now()
    queue = queue_view(core) if any(r.status == SessionStatus.QUEUED for r in rows) else None
    out = []
    for row in rows:
        entry = queue.entry(row.id) if queue is not None else None
        expires = row.expires_at if row.started_at is not None else None
        out.append(
            {
                "row": row,
                "expires_at": expires,
                "expires_in": seconds_until(expires, moment),
                "queue_position": entry.position if entry else None,
                "eta": entry.eta if entry else None,
            }
        )
    return out


def _start_form(core: Sandman, caller: Caller, user_id: str) -> dict[str, Any]:
    devices = core.inventory.devices()
    choices = profile_choices(devices, free_summary(devices, core.sessions.claims()))
    team = core.accounts.directory.get(user_id).default_team
    quotas = core.quotas.report(user_id, team, None)
    max_ttl = core.settings.max_ttl_minutes
    allowed: set[str] | None = None
    for quota in quotas:
        limits = quota["limits"]
        if limits.get("max_ttl_minutes") is not None:
            max_ttl = min(max_ttl, int(limits["max_ttl_minutes"]))
        if limits.get("allowed_profiles") is not None:
            names = set(limits["allowed_profiles"])
            allowed = names if allowed is None else allowed & names
    if allowed is not None:
        choices = [c for c in choices if c.name in allowed]
    return {
        "profiles": choices,
        "default_profile": core.settings.default_mig_profile,
        "environments": environments(core, caller),
        "default_ttl": min(core.settings.default_ttl_minutes, max_ttl),
        "max_ttl": max_ttl,
        "quotas": quotas,
    }


@router.get("/", name="portal.home")
def home(request: Request, seen: Seen) -> Response:
    core = core_of(request)
    context: dict[str, Any] = {"sessions": [], "start": None, "ended": []}
    own = Target(owner=seen.caller.user_id)
    if seen.caller.user_id is not None and decide(seen.caller, Action.SESSION_CREATE, own).allowed:
        context = {
            "sessions": _active(core, seen.user_id),
            "start": _start_form(core, seen.caller, seen.user_id),
            "ended": core.states.restorable(seen.user_id, RESTORABLE),
        }
    return render(request, "home.html", context, viewer=seen)


@router.get("/fragments/my-sessions", name="portal.my_sessions")
def my_sessions(request: Request, seen: Seen) -> Response:
    core = core_of(request)
    return render(
        request, "_my_sessions.html", {"sessions": _active(core, seen.user_id)}, viewer=seen
    )


def _gpu_request(profile: str) -> GpuRequest:
    if profile in ("", "default"):
        return GpuRequest()
    if profile == "none":
        return GpuRequest(gpu_count=0)
    if profile == "whole":
        return GpuRequest(gpu_count=1)
    return GpuRequest(mig_profile=profile)


def _whole(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidRequest(f"{what}: a whole number of minutes") from None


@router.post("/sessions/new", name="session.create")
async def start_session(request: Request, seen: Seen) -> Response:
    core = core_of(request)
    form = await form_of(request)
    caller = seen.caller
    try:
        require(caller, Action.SESSION_CREATE, Target(owner=seen.user_id))
        environment = form.get("environment", BASE)
        if environment not in {e["name"] for e in environments(core, caller)}:
            raise InvalidRequest(f"no environment {environment!r}")
        ttl = _whole(form.get("ttl_minutes", ""), "TTL") if form.get("ttl_minutes") else None
        charge = await run_in_threadpool(
            core.accounts.prepare_session, caller, seen.user_id, None, None
        )
        asked = SessionRequest(
            user_id=seen.user_id,
            ttl_minutes=ttl,
            gpu=_gpu_request(form.get("profile", "")),
            team=charge.team,
            project=charge.project,
            queue=form.get("queue") == "on",
        )
        if "environment" in {f.name for f in dataclasses.fields(SessionRequest)}:
            asked = cast(Any, dataclasses.replace)(asked, environment=environment)
        created = await core.creator.create(asked, wait_ready=False)
    except SandmanError as exc:
        return redirect(request, f"{PREFIX}/", exc.message, "error")
    session = created.session
    request.state.audit_target = session.id
    if session.status == SessionStatus.QUEUED:
        core.queue.wake()
    notes = " ".join(created.notes)
    if created.private_key is not None:
        # Generated for a user without keys: shown once, never stored.
        return render(
            request,
            "created.html",
            {"session": session, "private_key": created.private_key, "notes": notes},
            viewer=seen,
        )
    message = f"session {session.id} is {session.status}" + (f": {notes}" if notes else "")
    return redirect(request, f"{PREFIX}/sessions/{session.id}", message)


@router.post("/sessions/restore", name="session.restore")
async def restore_session(request: Request, seen: Seen) -> Response:
    """Start a session like an ended one, as ``POST /sessions`` with ``restore`` does:
    its image or environment, GPU share, TTL, limits, team and project, and its tmux
    windows once it runs. Refusals (an active session, a quota, no room) come back
    as the service's message; another user's or an unknown session is 404."""
    core = core_of(request)
    form = await form_of(request)
    caller = seen.caller
    try:
        require(caller, Action.SESSION_CREATE, Target(owner=seen.user_id))
        source = await run_in_threadpool(
            core.states.source, seen.user_id, form.get("restore", "").strip()
        )
        charge = await run_in_threadpool(
            core.accounts.prepare_session, caller, seen.user_id, source.team, source.project
        )
        asked = SessionRequest(
            user_id=seen.user_id,
            team=charge.team,
            project=charge.project,
            queue=form.get("queue") == "on",
        )
        asked, snapshot_note = await run_in_threadpool(
            core.snapshots.restore, restored_request(asked, source), source, False
        )
        created = await core.creator.create(asked, wait_ready=False)
    except SandmanError as exc:
        if exc.code == "not_found":
            raise
        return redirect(request, f"{PREFIX}/", exc.message, "error")
    session = created.session
    request.state.audit_target = session.id
    request.state.audit_detail = {"via": "portal", "restore": source.id}
    if session.status == SessionStatus.QUEUED:
        core.queue.wake()
    notes = [*created.notes, await run_in_threadpool(core.states.note, source)]
    if snapshot_note is not None:  # whether it started from the snapshot, or why not
        notes.append(snapshot_note)
    message = f"session {session.id} restored from {source.id}, {session.status}: " + " ".join(
        notes
    )
    return redirect(request, f"{PREFIX}/sessions/{session.id}", message)


def _visible(core: Sandman, seen: Viewer, session_id: str, action: Action) -> SessionRow:
    row = core.sessions.get(session_id)
    require_visible(
        seen.caller, action, Target(owner=row.user_id, team=row.team), f"session {session_id!r}"
    )
    return row


def session_detail(core: Sandman, row: SessionRow) -> dict[str, Any]:
    """The session as the API shows it, with its countdown, idle state and queue place."""
    moment = now()
    out = session_out(
        row,
        core.settings,
        core.workspace_location(row.user_id),
        core.inventory.simulated,
        core.gateway_port,
        core.gateway_host_key,
        {},
    )
    listed = session_rows(core, [row])[0]
    settings = core.settings
    out.update(
        expires_in=listed["expires_in"],
        queue_position=listed["queue_position"],
        eta=listed["eta"],
        active=row.status in (SessionStatus.RUNNING, SessionStatus.STARTING, SessionStatus.QUEUED),
        running=row.status == SessionStatus.RUNNING,
        idle=idle_state(
            row.last_activity or row.started_at,
            row.idle_timeout_minutes,
            settings.idle_timeout,
            settings.idle_timeout_max,
            settings.idle_warnings,
            moment,
        ),
        apps=session_apps(core, row, out),
    )
    return out


@router.get("/sessions/{session_id}", name="portal.session")
def session_page(session_id: str, request: Request, seen: Seen) -> Response:
    core = core_of(request)
    row = _visible(core, seen, session_id, Action.SESSION_READ)
    own = row.user_id == seen.caller.user_id
    return render(
        request,
        "session.html",
        {
            "s": session_detail(core, row),
            "may_extend": decide(
                seen.caller, Action.SESSION_EXTEND, Target(owner=row.user_id, team=row.team)
            ).allowed,
            "may_end": decide(
                seen.caller, Action.SESSION_END, Target(owner=row.user_id, team=row.team)
            ).allowed,
            "may_open_apps": own and core.settings.effective_apps_url is not None,
            "max_ttl": core.settings.max_ttl_minutes,
        },
        viewer=seen,
    )


@router.get("/sessions/{session_id}/status", name="portal.session_status")
def session_status(session_id: str, request: Request, seen: Seen) -> Response:
    core = core_of(request)
    row = _visible(core, seen, session_id, Action.SESSION_READ)
    return render(request, "_session_status.html", {"s": session_detail(core, row)}, viewer=seen)


@router.get("/sessions/{session_id}/ssh-config", name="portal.ssh_config")
def download_ssh_config(session_id: str, request: Request, seen: Seen) -> Response:
    core = core_of(request)
    row = _visible(core, seen, session_id, Action.SESSION_READ)
    text = ssh_config(session_detail(core, row))
    return PlainTextResponse(
        text,
        headers={"Content-Disposition": f'attachment; filename="sandman-{row.id[:8]}.ssh-config"'},
    )


@router.post("/sessions/{session_id}/extend", name="session.extend")
async def extend(session_id: str, request: Request, seen: Seen) -> Response:
    core = core_of(request)
    form = await form_of(request)
    back = f"{PREFIX}/sessions/{session_id}"
    try:
        ttl = _whole(form.get("ttl_minutes", ""), "TTL")
        await run_in_threadpool(_visible, core, seen, session_id, Action.SESSION_EXTEND)
        row = await run_in_threadpool(core.sessions.extend, session_id, ttl)
    except SandmanError as exc:
        if exc.code == "not_found":
            raise
        return redirect(request, back, exc.message, "error")
    return redirect(request, back, f"extended: ends {row.expires_at:%H:%M} UTC")


@router.post("/sessions/{session_id}/end", name="session.end")
async def end(session_id: str, request: Request, seen: Seen) -> Response:
    core = core_of(request)
    form = await form_of(request)
    await run_in_threadpool(_visible, core, seen, session_id, Action.SESSION_END)
    reason = f"ended in the portal by {seen.caller.actor}"
    await run_in_threadpool(
        functools.partial(core.sessions.end, wait=True), session_id, SessionStatus.DELETED, reason
    )
    back = _next(form.get("next")) if form.get("next") else f"{PREFIX}/"
    return redirect(request, back, f"session {session_id} ended")


@router.post("/sessions/{session_id}/apps/{app}", name="session.app_open")
async def open_app(session_id: str, app: str, request: Request, seen: Seen) -> Response:
    """The portal's half of the apps handshake: a one-time code, and off to the apps
    origin, which trades it for a cookie of its own."""
    core = core_of(request)
    apps_url = core.settings.effective_apps_url
    if apps_url is None:
        raise InvalidRequest("this Sandman serves no apps origin (SANDMAN_APPS_URL)")
    request.state.audit_detail = {"app": app, "via": "portal"}
    code = await run_in_threadpool(core.apps.mint, seen.caller, session_id, app)
    return RedirectResponse(f"{apps_url}/_open?code={code}", status_code=303)
