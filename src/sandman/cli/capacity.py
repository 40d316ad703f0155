"""``sandman capacity`` and ``sandman advice``: demand against capacity, and the MIG
layout that would have served the most on static GPUs (operators and admins)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from sandman.cli.client import _call, out

Days = Annotated[int, typer.Option("--days", "-d", min=1, max=366, help="The window, in days.")]
AsJson = Annotated[bool, typer.Option("--json")]


def _n(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def capacity_command(days: Days = 30, as_json: AsJson = False) -> None:
    """Per profile: capacity, the peak held at once, and the requests that started,
    queued or were refused in the window, with the layout advice for static GPUs."""
    body: dict[str, Any] = _call("GET", "/capacity", params={"days": days})
    if as_json:
        out.print_json(json.dumps(body))
        return
    table = Table(
        "profile", "capacity", "peak", "served h", "started", "queued", "refused",
        "queued h asked", "refused h asked",
    )  # fmt: skip
    for row in body["profiles"]:
        asked, hours = row["requests"], row["asked_slice_hours"]
        refused = str(asked["refused"])
        if row["refused_by_quota"]:
            refused += f" ({row['refused_by_quota']} quota)"
        table.add_row(
            row["profile"],
            f"{row['capacity_instances']} ({_n(row['capacity_slices'])} slices)",
            _n(row["peak_slices"]),
            _n(row["served_slice_hours"]),
            str(asked["started"]),
            str(asked["queued"]),
            refused,
            _n(hours["queued"]),
            _n(hours["refused"]),
        )
    out.print(f"last {days} days, in slices (7 a GPU) and slice-hours")
    out.print(table)
    out.print(
        f"all GPUs: {_n(body['total_slices'])} slices; at most {_n(body['peak_slices'])} "
        f"held at once; {_n(body['served_slice_hours'])} slice-hours served"
    )
    for line in body["advice"]:
        out.print(f"advice: {line}")


def advice_command(days: Days = 30, as_json: AsJson = False) -> None:
    """For static MIG GPUs: the full layout that would have served the most of the
    window's requests, against today's."""
    body: dict[str, Any] = _call("GET", "/gpus/advice", params={"days": days})
    if as_json:
        out.print_json(json.dumps(body))
        return
    if not body["advice"]:
        out.print("no static MIG GPUs here: nothing to advise")
    for advice in body["advice"]:
        out.print(advice["line"])
        if advice["placements"]:
            starts = " ".join(f"{name}@{start}" for name, start in advice["placements"])
            out.print(f"  placements on each GPU: {starts}")
        table = Table("layout", "slice-hours served")
        for scored in advice["top"]:
            table.add_row(scored["layout"], _n(scored["slice_hours"]))
        table.add_row(f"today: {advice['current']}", _n(advice["current_slice_hours"]))
        out.print(table)
        for note in advice["notes"]:
            out.print(f"  [yellow]{note}[/yellow]")
