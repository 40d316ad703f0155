"""``sandman usage``: GPU usage and its cost per user, team, project or model."""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from sandman.cli.client import _call, _client, err, given, out


def _csv(params: dict[str, Any]) -> str:
    try:
        with _client() as client:
            response = client.get("/usage", params={**params, "format": "csv"})
    except httpx.HTTPError as exc:
        err.print(f"[red]cannot reach Sandman: {exc}[/red]")
        raise typer.Exit(1) from None
    if response.status_code >= 400:
        err.print(f"[red]{response.status_code}: {response.json().get('error')}[/red]")
        raise typer.Exit(1)
    return response.text


def usage_command(
    group_by: Annotated[str, typer.Option("--by", help="user, team, project or model")] = "user",
    period: Annotated[str, typer.Option(help="day, week or month (UTC)")] = "month",
    start: Annotated[
        str | None, typer.Option("--from", help="First day, YYYY-MM-DD (default: this month)")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="Day after the last, YYYY-MM-DD")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on standard output")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """GPU-hours and cost per group and period from the cost ledger; operators also
    see the idle capacity, so the rows add up to what the GPUs cost."""
    params = {"group_by": group_by, "period": period, **given(**{"from": start, "to": end})}
    if as_csv:
        typer.echo(_csv(params), nl=False)
        return
    body = _call("GET", "/usage", params=params)
    if as_json:
        out.print_json(json.dumps(body))
        return
    currency = body["currency"]
    table = Table("period", group_by, "GPU-hours", f"cost ({currency})")
    for row in body["rows"]:
        name = row["group"] if row["kind"] == "usage" else f"({row['kind']})"
        if row["kind"] == "discount" and not row["cost"]:
            continue
        table.add_row(row["period"], name or "-", f"{row['gpu_hours']:.2f}", f"{row['cost']:.2f}")
    out.print(table)
    for total in body["totals"]:
        line = (
            f"{total['period']}: {total['gpu_hours']:.2f} GPU-hours, {total['cost']:.2f} {currency}"
        )
        if total["capacity_cost"] is not None:
            line += f" of a capacity of {total['capacity_cost']:.2f} {currency}"
        out.print(line)
