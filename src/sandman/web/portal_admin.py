"""The portal's pages for operators and admins: the GPUs with their MIG layouts,
every session, the queue, people and their limits, costs, and the audit trail.

Each page names the action it needs and ``require`` decides; what a page lists is
what the services show that caller (``session_visibility``, ``usage_visibility``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from sandman.accounting.budgets import BudgetAction, BudgetKind
from sandman.accounting.reports import GroupBy, Period
from sandman.accounts.policy import (
    Action,
    decide,
    require,
    session_visibility,
    usage_visibility,
)
from sandman.domain import SessionStatus
from sandman.errors import InvalidRequest
from sandman.services.queue import asked_profile
from sandman.web.portal import queue_view, session_rows
from sandman.web.portal_base import PREFIX, PortalRoute, Seen, Viewer, core_of, render
from sandman.web.portal_views import gpu_cards

router = APIRouter(prefix=PREFIX, route_class=PortalRoute, include_in_schema=False)
PAGE = 200  # sessions per page
STATUSES = ["active", "all", *[s.value for s in SessionStatus]]


# -- GPUs ------------------------------------------------------------------------------
def _gpus(request: Request, seen: Viewer) -> dict[str, Any]:
    core = core_of(request)
    require(seen.caller, Action.SESSION_LIST_ALL)
    owners = core.sessions.claimed_by()
    users = {row.id: row.user_id for row in core.sessions.list_sessions("active")}
    cards = gpu_cards(core.inventory.devices(), owners, users)
    held = sum(1 for c in cards for b in c.blocks if b.session_id)
    return {
        "cards": cards,
        "held": held,
        "alerts": sum(len(c.alerts) for c in cards),
        "backend": core.inventory.backend,
    }


@router.get("/gpus", name="portal.gpus")
def gpus_page(request: Request, seen: Seen) -> Response:
    return render(request, "gpus.html", _gpus(request, seen), viewer=seen)


@router.get("/fragments/gpus", name="portal.gpus_fragment")
def gpus_fragment(request: Request, seen: Seen) -> Response:
    return render(request, "_gpus.html", _gpus(request, seen), viewer=seen)


# -- sessions --------------------------------------------------------------------------
def _sessions(
    request: Request, seen: Viewer, status: str, user: str | None, offset: int
) -> dict[str, Any]:
    core = core_of(request)
    require(seen.caller, Action.SESSION_LIST_ALL)
    if status not in STATUSES:
        raise InvalidRequest(f"status: one of {', '.join(STATUSES)}")
    visible = session_visibility(seen.caller)
    rows, total = core.sessions.page(
        status, user or None, PAGE, max(0, offset), visible, queued=True
    )
    return {
        "sessions": session_rows(core, rows),
        "total": total,
        "status": status,
        "user": user or "",
        "offset": offset,
        "page": PAGE,
        "statuses": STATUSES,
    }


@router.get("/sessions", name="portal.sessions")
def sessions_page(
    request: Request, seen: Seen, status: str = "active", user: str | None = None, offset: int = 0
) -> Response:
    context = _sessions(request, seen, status, user, offset)
    return render(request, "sessions.html", context, viewer=seen)


@router.get("/fragments/sessions", name="portal.sessions_fragment")
def sessions_fragment(
    request: Request, seen: Seen, status: str = "active", user: str | None = None, offset: int = 0
) -> Response:
    context = _sessions(request, seen, status, user, offset)
    return render(request, "_sessions.html", context, viewer=seen)


# -- the queue -------------------------------------------------------------------------
@router.get("/queue", name="portal.queue")
def queue_page(request: Request, seen: Seen) -> Response:
    core = core_of(request)
    require(seen.caller, Action.SESSION_LIST_ALL)
    entries = [
        {
            "row": entry.row,
            "position": entry.position,
            "eta": entry.eta,
            "asks": asked_profile(entry.request, core.settings.default_mig_profile),
        }
        for entry in queue_view(core).entries
    ]
    return render(request, "queue.html", {"entries": entries}, viewer=seen)


# -- people, teams, projects, quotas, budgets ------------------------------------------
@router.get("/people", name="portal.people")
def people_page(request: Request, seen: Seen) -> Response:
    core = core_of(request)
    require(seen.caller, Action.USER_LIST)
    context = {
        "users": core.accounts.directory.list_users(),
        "teams": core.accounts.teams.list_teams(seen.caller),
        "projects": core.accounts.teams.list_projects(seen.caller),
        "quotas": core.quotas.list_quotas(),
        "budgets": [b.as_dict() for b in core.budgets.statuses()],
        "may_quota": decide(seen.caller, Action.QUOTA_MANAGE).allowed,
        "may_budget": decide(seen.caller, Action.BUDGET_MANAGE).allowed,
        "budget_actions": [a.value for a in BudgetAction],
    }
    return render(request, "people.html", context, viewer=seen)


# -- costs -----------------------------------------------------------------------------
def cost_series(rows: list[Any]) -> dict[str, Any]:
    """The report's rows as a chart's series: days on x, one line per group."""
    days = sorted({row.period for row in rows})
    groups = sorted({row.group or "(none)" for row in rows})
    cost: dict[tuple[Any, str], float] = defaultdict(float)
    for row in rows:
        cost[(row.period, row.group or "(none)")] += row.cost
    return {
        "x": [_epoch(day) for day in days],
        "series": [{"label": g, "values": [round(cost[(d, g)], 4) for d in days]} for g in groups],
    }


def _epoch(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


@router.get("/costs", name="portal.costs")
def costs_page(request: Request, seen: Seen, by: str = "team") -> Response:
    core = core_of(request)
    require(seen.caller, Action.USAGE_READ_ALL)
    if by not in ("team", "project"):
        raise InvalidRequest("by: team or project")
    report = core.usage.report(usage_visibility(seen.caller), GroupBy(by), Period.DAY)
    rows = [r for r in report.rows if r.kind.value == "usage"]
    forecasts = core.budgets.forecasts(BudgetKind(by))
    chart = json.dumps(cost_series(rows)).replace("<", "\\u003c")  # safe in <script>
    return render(
        request,
        "costs.html",
        {
            "by": by,
            "report": report,
            "forecasts": forecasts,
            "chart": chart,
            "totals": report.totals,
        },
        viewer=seen,
    )


# -- the audit trail -------------------------------------------------------------------
@router.get("/audit", name="portal.audit")
def audit_page(
    request: Request, seen: Seen, actor: str | None = None, action: str | None = None
) -> Response:
    core = core_of(request)
    require(seen.caller, Action.AUDIT_READ)
    records = core.audit.query(actor or None, action or None, limit=200)
    return render(
        request,
        "audit.html",
        {"records": records, "actor": actor or "", "action": action or ""},
        viewer=seen,
    )
