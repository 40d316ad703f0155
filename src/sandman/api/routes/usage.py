"""``/usage``: GPU usage and its cost per user, team, project or GPU model, per day,
week or month (UTC), from the cost ledger; JSON or CSV."""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, BeforeValidator, Field
from pydantic_core import to_json

from sandman.accounting.reports import GroupBy, Period, Report, to_csv
from sandman.accounts.policy import usage_visibility
from sandman.api.auth import Who
from sandman.api.openapi import errors
from sandman.api.routes.deps import sandman
from sandman.api.schemas import UtcTime
from sandman.core import Sandman

router = APIRouter(tags=["usage"])
App = Annotated[Sandman, Depends(sandman)]
DIGITS = 6


class UsageRowOut(BaseModel):
    period: date = Field(description="The calendar period's first day (UTC; weeks from Monday).")
    kind: Literal["usage", "discount", "idle"] = Field(
        description="`usage`: a group's GPU time and what it pays; `discount`: what `low` "
        "priority did not pay; `idle`: capacity not allocated (operators only)."
    )
    group: str | None = Field(
        description="The user, team, project or GPU model; null for discount and idle rows "
        "and for sessions without a team or project."
    )
    gpu_hours: float
    cost: float


class PeriodTotalOut(BaseModel):
    period: date
    start: UtcTime = Field(description="The period as counted: clipped to the window and now.")
    end: UtcTime
    gpu_hours: float = Field(description="Allocated GPU-hours.")
    cost: float = Field(description="Allocated at full price: charged + discount.")
    discount: float
    capacity_gpu_hours: float | None = Field(None, description="Operators only.")
    capacity_cost: float | None = Field(
        None, description="Operators only: charged + discount + idle, always."
    )
    idle_cost: float | None = None


class UsageOut(BaseModel):
    group_by: str
    period: str
    start: UtcTime
    end: UtcTime = Field(description="The window's end as counted: never past now.")
    currency: str
    complete: bool = Field(
        description="Everyone's usage with idle capacity (operators), or only what the "
        "caller may see (their own, their led teams')."
    )
    rows: list[UsageRowOut]
    totals: list[PeriodTotalOut]


def _iso_date(value: Any) -> Any:
    """Only ``YYYY-MM-DD``: not a timestamp or a date-time that pydantic would take too."""
    if not isinstance(value, str) or not ISO_DATE.fullmatch(value):
        raise ValueError("must be a date as YYYY-MM-DD")
    return value


ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
IsoDate = Annotated[date, BeforeValidator(_iso_date)]


def _iso(value: datetime) -> str:
    """As ``UtcTime`` writes it."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _rounded(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    return round(value, DIGITS) if isinstance(value, float) else value


def _body(result: Report) -> dict[str, Any]:
    """``UsageOut`` as plain values, built without validation: a year of days per user
    is tens of thousands of rows, and the report already has their types."""
    return {
        "group_by": result.group_by.value,
        "period": result.period.value,
        "start": _iso(result.start),
        "end": _iso(result.end),
        "currency": result.currency,
        "complete": result.full,
        "rows": [
            {
                "period": row.period,
                "kind": row.kind.value,
                "group": row.group,
                "gpu_hours": round(row.gpu_hours, DIGITS),
                "cost": round(row.cost, DIGITS),
            }
            for row in result.rows
        ],
        "totals": [{k: _rounded(v) for k, v in asdict(t).items()} for t in result.totals],
    }


@router.get(
    "/usage",
    name="usage.report",
    response_model=UsageOut,
    responses={
        200: {
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "period,kind,group,gpu_hours,cost,currency\r\n",
                }
            },
            "description": "The report; CSV (one row per line, a header first) with `format=csv`.",
        },
        **errors(400, 403),
    },
)
def usage_report(
    app: App,
    caller: Who,
    group_by: Annotated[GroupBy, Query(description="What a row is.")] = GroupBy.USER,
    period: Annotated[Period, Query(description="Calendar periods in UTC.")] = Period.MONTH,
    start: Annotated[
        IsoDate | None,
        Query(alias="from", description="First day (UTC), included; default: this month's."),
    ] = None,
    end: Annotated[
        IsoDate | None,
        Query(alias="to", description="Last day (UTC), excluded; default: next month's first."),
    ] = None,
    format: Annotated[Literal["json", "csv"], Query(description="The answer's format.")] = "json",
) -> Any:
    """GPU usage and its cost from the ledger of grants (to the second; a running
    session counts up to now). Operators see everyone's with an `idle` row, so
    usage + discount + idle equals the capacity's cost; users see their own and,
    as team leads, their team's."""
    visibility = usage_visibility(caller)
    result = app.usage.report(visibility, group_by, period, start, end)
    if format == "csv":
        return Response(
            to_csv(result),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="usage.csv"'},
        )
    return Response(to_json(_body(result)), media_type="application/json")
