"""The portal's forms for operators and admins: environments (list, add, change,
remove), and the quotas and budgets of the people page.

Each form calls the same service as its API route (``environments.service``,
``services.quotas``, ``accounting.budgets``) and ``require`` decides who may; what
a form sent is checked as the API checks its body, and a refusal comes back as
the service's message on the page it came from.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from sandman.accounting.budgets import BudgetAction, BudgetKind, checked_budget
from sandman.accounts.policy import Action, require
from sandman.api.routes.quotas import QuotaBody
from sandman.core import Sandman
from sandman.environments.model import APP_NAMES, environment_out
from sandman.errors import InvalidRequest, SandmanError
from sandman.policy.quotas import ScopeKind
from sandman.web.portal_base import PREFIX, PortalRoute, Seen, core_of, form_of, redirect, render

router = APIRouter(prefix=PREFIX, route_class=PortalRoute, include_in_schema=False)
ENVIRONMENTS = f"{PREFIX}/environments"
PEOPLE = f"{PREFIX}/people"
IMAGES_TTL = 30.0  # seconds the engine's list of images is reused by the page
QUOTA_NUMBERS = {
    "max_sessions": int,
    "max_slices": float,
    "guaranteed_slices": float,
    "max_ttl_minutes": int,
    "max_gpu_hours_month": float,
}
QUOTA_NAMES = ("allowed_profiles", "allowed_models", "allowed_images", "allowed_priorities")
_images: weakref.WeakKeyDictionary[Sandman, tuple[float, set[str] | None]] = (
    weakref.WeakKeyDictionary()
)


def names_of(text: str) -> list[str]:
    """A comma- or space-separated list as typed into a form."""
    return [part for part in text.replace(",", " ").split() if part]


def image_tags(core: Sandman) -> set[str] | None:
    """The engine's image tags (None: this runtime cannot say), read at most every
    ``IMAGES_TTL`` seconds so the page stays fast."""
    moment = time.monotonic()
    cached = _images.get(core)
    if cached is not None and moment - cached[0] < IMAGES_TTL:
        return cached[1]
    lister: Any = getattr(core.runtime, "image_tags", None)
    tags: set[str] | None = None
    if lister is not None:
        try:
            tags = set(lister())
        except SandmanError:
            tags = None
    _images[core] = (moment, tags)
    return tags


def is_built(image: str, tags: set[str] | None) -> bool | None:
    if tags is None:
        return None
    return image in tags or (":" not in image.rsplit("/", 1)[-1] and f"{image}:latest" in tags)


# -- environments ----------------------------------------------------------------------
@router.get("/environments", name="portal.environments")
def environments_page(request: Request, seen: Seen) -> Response:
    core = core_of(request)
    require(seen.caller, Action.ENVIRONMENT_MANAGE)
    tags = image_tags(core)
    rows = []
    for environment in core.environments.all().values():
        out = environment_out(environment)
        out["built"] = is_built(environment.image, tags)
        rows.append(out)
    return render(
        request,
        "environments.html",
        {"environments": rows, "app_names": [a for a in APP_NAMES if a != "shell"]},
        viewer=seen,
    )


def environment_values(form: dict[str, str], app_names: list[str]) -> dict[str, Any]:
    """The fields of an environment form as the API's body would carry them (an
    empty image leaves the image as it is)."""
    values: dict[str, Any] = {
        "description": form.get("description", "").strip(),
        "apps": [app for app in app_names if form.get(f"app_{app}") == "on"],
        "default_profile": form.get("default_profile", "").strip() or None,
        "allowed_teams": names_of(form.get("allowed_teams", "")),
    }
    if form.get("image", "").strip():
        values["image"] = form["image"].strip()
    return values


@router.post("/environments", name="environment.create")
async def add_environment(request: Request, seen: Seen) -> Response:
    core = core_of(request)
    form = await form_of(request)
    require(seen.caller, Action.ENVIRONMENT_MANAGE)
    name = form.get("name", "").strip()
    try:
        values = environment_values(form, list(APP_NAMES))
        await run_in_threadpool(core.environments.create, name, values)
    except SandmanError as exc:
        return redirect(request, ENVIRONMENTS, exc.message, "error")
    request.state.audit_target = name
    return redirect(request, ENVIRONMENTS, f"environment {name} added")


@router.post("/environments/{name}", name="environment.update")
async def change_environment(name: str, request: Request, seen: Seen) -> Response:
    core = core_of(request)
    form = await form_of(request)
    require(seen.caller, Action.ENVIRONMENT_MANAGE)
    try:
        values = environment_values(form, list(APP_NAMES))
        await run_in_threadpool(core.environments.update, name, values)
    except SandmanError as exc:
        return redirect(request, ENVIRONMENTS, exc.message, "error")
    request.state.audit_target = name
    return redirect(request, ENVIRONMENTS, f"environment {name} changed")


@router.post("/environments/{name}/delete", name="environment.delete")
async def delete_environment(name: str, request: Request, seen: Seen) -> Response:
    core = core_of(request)
    require(seen.caller, Action.ENVIRONMENT_MANAGE)
    try:
        await run_in_threadpool(core.environments.delete, name)
    except SandmanError as exc:
        return redirect(request, ENVIRONMENTS, exc.message, "error")
    request.state.audit_target = name
    return redirect(request, ENVIRONMENTS, f"environment {name} removed")


# -- quotas ----------------------------------------------------------------------------
def quota_body(form: dict[str, str]) -> QuotaBody:
    """A quota form as the API's ``QuotaBody`` (the same limits and checks); an
    empty field is no limit."""
    values: dict[str, Any] = {}
    for field, kind in QUOTA_NUMBERS.items():
        text = form.get(field, "").strip()
        if text:
            try:
                values[field] = kind(text)
            except ValueError:
                word = "a whole number" if kind is int else "a number"
                raise InvalidRequest(f"{field}: {word}, not {text!r}") from None
    for field in QUOTA_NAMES:
        if form.get(field, "").strip():
            values[field] = names_of(form[field])
    try:
        return QuotaBody.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidRequest(f"{where}: {first['msg']}") from None


@router.post("/quotas", name="quota.put")
async def put_quota(request: Request, seen: Seen) -> Response:
    core = core_of(request)
    form = await form_of(request)
    require(seen.caller, Action.QUOTA_MANAGE)
    kind, name = form.get("kind", ""), form.get("name", "").strip()
    try:
        if kind not in {k.value for k in ScopeKind}:
            raise InvalidRequest("kind: user, team or project")
        if not name:
            raise InvalidRequest(f"name: which {kind}")
        quota = quota_body(form).quota()
        await run_in_threadpool(core.quotas.put, ScopeKind(kind), name, quota)
    except SandmanError as exc:
        return redirect(request, PEOPLE, exc.message, "error")
    request.state.audit_target = f"{kind}:{name}"
    return redirect(request, PEOPLE, f"quota of {kind} {name} set")


# -- budgets ---------------------------------------------------------------------------
def budget_of(core: Sandman, form: dict[str, str]) -> Any:
    """A budget form checked as ``PUT /budgets/{kind}/{name}`` checks its body."""
    kind, name = form.get("kind", ""), form.get("name", "").strip()
    if kind not in {k.value for k in BudgetKind}:
        raise InvalidRequest("kind: team or project")
    if kind == BudgetKind.TEAM:
        core.accounts.teams.get_team(name)
    else:
        core.accounts.teams.get_project(name)
    text = form.get("amount", "").strip()
    try:
        amount: object = float(text)
    except ValueError:
        amount = text
    thresholds: list[object] | None = None
    if form.get("thresholds", "").strip():
        thresholds = [int(t) if t.isdigit() else t for t in names_of(form["thresholds"])]
    action = form.get("action") or BudgetAction.WARN.value
    return checked_budget(BudgetKind(kind), name, amount, thresholds, action)


@router.post("/budgets", name="budget.put")
async def put_budget(request: Request, seen: Seen) -> Response:
    core = core_of(request)
    form = await form_of(request)
    require(seen.caller, Action.BUDGET_MANAGE)
    try:
        budget = await run_in_threadpool(budget_of, core, form)
        await run_in_threadpool(core.budgets.put, budget)
    except SandmanError as exc:
        return redirect(request, PEOPLE, exc.message, "error")
    request.state.audit_target = f"{budget.kind.value}:{budget.name}"
    return redirect(request, PEOPLE, f"budget of {budget.kind.value} {budget.name} set")
