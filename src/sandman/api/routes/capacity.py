"""``/capacity`` and ``/gpus/advice``: demand against capacity, and which MIG layout
would have served the most on static GPUs (operators and admins)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from sandman.accounting.advice import Advice
from sandman.accounts.policy import Action
from sandman.api.auth import allow
from sandman.api.openapi import errors
from sandman.api.routes.deps import sandman
from sandman.api.schemas import UtcTime
from sandman.core import Sandman

router = APIRouter(tags=["capacity"])
App = Annotated[Sandman, Depends(sandman)]
Days = Annotated[
    int, Query(ge=1, le=366, description="The window: this many days up to now (default 30).")
]
READ = [allow(Action.CAPACITY_READ)]


class Requests(BaseModel):
    started: int = Field(description="Started at once.")
    queued: int = Field(description="Queued (some started later).")
    refused: int = Field(description="Refused: no room, or a quota.")


class SliceHours(BaseModel):
    started: float
    queued: float
    refused: float


class ProfileOut(BaseModel):
    profile: str = Field(description="A MIG profile, `gpu` (whole GPUs) or `shared`.")
    slices_each: float = Field(description="What one counts, in sevenths of a GPU.")
    capacity_instances: int = Field(
        description="How many the GPUs can hold: on static GPUs the instances that "
        "exist, on dynamic ones as many as fit on a GPU alone."
    )
    capacity_slices: float
    peak_slices: float = Field(description="The most held at once in the window.")
    served_slice_hours: float = Field(description="Held in the window.")
    requests: Requests = Field(description="Requests in the window, by outcome.")
    refused_by_quota: int = Field(description="Of the refused, those a quota refused.")
    asked_slice_hours: SliceHours = Field(description="Slices x TTL asked, by outcome.")


class CapacityOut(BaseModel):
    since: UtcTime
    until: UtcTime
    total_slices: float = Field(description="Every GPU here, in slices (7 a GPU).")
    peak_slices: float = Field(description="The most held at once, all profiles together.")
    served_slice_hours: float
    profiles: list[ProfileOut]
    advice: list[str] = Field(description="The layout advice for static MIG GPUs, a line each.")


class ScoredOut(BaseModel):
    layout: str
    slice_hours: float


class AdviceOut(BaseModel):
    model: str
    gpus: int = Field(description="Static MIG GPUs of this model.")
    current: str = Field(description="Today's layout (per GPU, `;`-joined where they differ).")
    current_slice_hours: float = Field(description="What today's layout would have served.")
    layout: str | None = Field(description="The advised layout; null: keep today's.")
    placements: list[tuple[str, int]] | None = Field(
        description="The advised layout as (profile, start) pairs for each GPU."
    )
    slice_hours: float = Field(description="What the advised layout would have served.")
    gain_percent: float | None = Field(
        description="How much more than today's; null when today's served nothing."
    )
    asked_slice_hours: float
    requests: int = Field(description="Requests in the window this model could serve.")
    replayed: int
    candidates: int = Field(description="Full layouts of the model compared.")
    top: list[ScoredOut] = Field(description="The best candidates, best first.")
    notes: list[str]
    line: str = Field(description="The advice in one sentence.")


class AdvicesOut(BaseModel):
    since: UtcTime
    until: UtcTime
    advice: list[AdviceOut]


@router.get(
    "/capacity",
    name="capacity.read",
    response_model=CapacityOut,
    dependencies=READ,
    responses=errors(403),
)
def capacity(app: App, days: Days = 30) -> dict[str, Any]:
    """Per profile: capacity, the peak held at once, and the requests that started,
    queued or were refused in the last ``days``, with the layout advice for static
    MIG GPUs."""
    view = app.capacity.view(days)
    return {
        "since": view.since,
        "until": view.until,
        "total_slices": view.total_slices,
        "peak_slices": view.peak_slices,
        "served_slice_hours": round(view.served_slice_hours, 3),
        "profiles": [
            {
                "profile": row.key,
                "slices_each": row.slices_each,
                "capacity_instances": row.capacity_instances,
                "capacity_slices": row.capacity_slices,
                "peak_slices": row.peak_slices,
                "served_slice_hours": round(row.served_slice_hours, 3),
                "requests": row.requests,
                "refused_by_quota": row.refused_by_quota,
                "asked_slice_hours": {k: round(v, 3) for k, v in row.asked_slice_hours.items()},
            }
            for row in view.profiles
        ],
        "advice": list(view.advice),
    }


def _advice_out(advice: Advice) -> dict[str, Any]:
    gain = advice.gain_percent
    return {
        "model": advice.model,
        "gpus": advice.gpus,
        "current": advice.current,
        "current_slice_hours": round(advice.current_slice_hours, 3),
        "layout": advice.layout.label if advice.layout else None,
        "placements": list(advice.layout.placements) if advice.layout else None,
        "slice_hours": round(advice.slice_hours, 3),
        "gain_percent": round(gain, 1) if gain is not None else None,
        "asked_slice_hours": round(advice.asked_slice_hours, 3),
        "requests": advice.requests,
        "replayed": advice.replayed,
        "candidates": advice.candidates,
        "top": [{"layout": s.label, "slice_hours": round(s.slice_hours, 3)} for s in advice.top],
        "notes": list(advice.notes),
        "line": advice.line,
    }


@router.get(
    "/gpus/advice",
    name="capacity.advice",
    response_model=AdvicesOut,
    dependencies=READ,
    responses=errors(403),
)
def advice(app: App, days: Days = 30) -> dict[str, Any]:
    """For each model with static MIG GPUs: the full layout (one for all its static
    GPUs) that would have served the most slice-hours of the last ``days``' requests
    (served, queued and refused for lack of room, replayed in order; a request that
    finds no free instance of its profile is lost), against today's layout."""
    window, found = app.capacity.advice(days)
    return {
        "since": window.since,
        "until": window.until,
        "advice": [_advice_out(a) for a in found],
    }
