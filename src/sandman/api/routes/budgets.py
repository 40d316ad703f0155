"""``/budgets`` and ``/forecasts``: monthly budgets per team and project, with the
spend to date and a forecast of the month."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from sandman.accounting.budgets import BudgetAction, BudgetKind, checked_budget
from sandman.accounts.policy import Action, Caller, Target, decide
from sandman.api.auth import Who, allow
from sandman.api.openapi import errors
from sandman.api.routes.deps import sandman
from sandman.api.schemas import UtcTime
from sandman.core import Sandman

router = APIRouter(tags=["costs"])
App = Annotated[Sandman, Depends(sandman)]
Kind = Literal["team", "project"]
NamePath = Annotated[
    str,
    PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="A team or project."),
]


class BudgetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: float = Field(gt=0, le=1e12, description="Per calendar month (UTC), in the currency.")
    thresholds: list[Annotated[int, Field(ge=1, le=1000)]] | None = Field(
        None,
        min_length=1,
        max_length=20,
        description="Percentages whose crossing alerts the team's leads (default 50, 80, 100).",
    )
    action: BudgetAction = Field(
        BudgetAction.WARN,
        description="At 100%: warn; block-new (new sessions refused, budget_exhausted); "
        "end (also ends the running sessions after SANDMAN_PREEMPT_GRACE).",
    )


class ForecastOut(BaseModel):
    projected: float = Field(
        description="Spend to date + the running sessions until their expiry + the "
        "trailing 7 days' burn per hour x the hours left in the month."
    )
    committed: float
    burn_per_hour: float
    hourly_now: float
    runs_out_at: UtcTime | None = Field(description="When the projection reaches the budget.")
    month_end: UtcTime


class BudgetOut(BaseModel):
    kind: str
    name: str
    amount: float
    thresholds: list[int]
    action: str
    currency: str
    month: str
    spent: float
    used_ratio: float
    forecast: ForecastOut
    sessions_end_at: UtcTime | None = Field(
        description="Action end, once spent: when the sessions charged to it end."
    )
    updated_at: UtcTime


class TeamForecastOut(ForecastOut):
    kind: str
    name: str
    currency: str
    month: str
    spent: float


def _exists(app: Sandman, kind: BudgetKind, name: str) -> None:
    if kind == BudgetKind.TEAM:
        app.accounts.teams.get_team(name)
    else:
        app.accounts.teams.get_project(name)


def _visible_teams(app: Sandman, caller: Caller) -> tuple[bool, set[str], set[str]]:
    """(everything?, the teams, the projects) whose budgets the caller may read."""
    if decide(caller, Action.BUDGET_MANAGE).allowed:
        return True, set(), set()
    teams = {t for t in caller.teams if decide(caller, Action.BUDGET_READ, Target(team=t)).allowed}
    projects = {p.name for p in app.accounts.teams.list_projects(caller) if p.team in teams}
    return False, teams, projects


@router.put(
    "/budgets/{kind}/{name}",
    name="budget.put",
    response_model=BudgetOut,
    responses=errors(403, 404),
    dependencies=[allow(Action.BUDGET_MANAGE)],
)
def put_budget(kind: Kind, name: NamePath, body: BudgetBody, app: App) -> dict[str, Any]:
    """Set the team's or project's monthly budget (operators and admins)."""
    which = BudgetKind(kind)
    _exists(app, which, name)
    budget = checked_budget(which, name, body.amount, body.thresholds, body.action.value)
    return app.budgets.put(budget).as_dict()


@router.delete(
    "/budgets/{kind}/{name}",
    name="budget.delete",
    responses=errors(403, 404),
    dependencies=[allow(Action.BUDGET_MANAGE)],
)
def delete_budget(kind: Kind, name: NamePath, app: App) -> dict[str, str]:
    app.budgets.delete(BudgetKind(kind), name)
    return {"message": f"budget of {kind} {name} deleted"}


@router.get("/budgets", name="budget.list", response_model=list[BudgetOut])
def list_budgets(app: App, caller: Who) -> list[dict[str, Any]]:
    """Budgets with this month's spend and forecast: operators and admins see all; a
    team's members see the team's and its projects'."""
    everything, teams, projects = _visible_teams(app, caller)
    keys = None
    if not everything:
        keys = [(BudgetKind.TEAM, t) for t in teams] + [(BudgetKind.PROJECT, p) for p in projects]
    return [s.as_dict() for s in app.budgets.statuses(keys)]


@router.get("/forecasts", name="budget.forecasts", response_model=list[TeamForecastOut])
def list_forecasts(
    app: App,
    caller: Who,
    kind: Annotated[Kind, Query(description="Per team or per project")] = "team",
) -> list[dict[str, Any]]:
    """This month's spend and forecast of every team (or project) that spent or runs
    anything, budget or not; users see their teams' (and their projects')."""
    everything, teams, projects = _visible_teams(app, caller)
    allowed = teams if kind == "team" else projects
    return [
        f for f in app.budgets.forecasts(BudgetKind(kind)) if everything or f["name"] in allowed
    ]
