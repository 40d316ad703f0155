"""``sandman budgets``: monthly budgets per team and project, with spend and forecast."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from sandman.cli.client import _call, out

budgets_app = typer.Typer(help="Budgets per team and project.", no_args_is_help=True)


def _money(value: float, currency: str) -> str:
    return f"{value:,.2f} {currency}"


@budgets_app.command("show")
def show(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The budgets you may see, with this month's spend and forecast."""
    rows = _call("GET", "/budgets")
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("kind", "name", "budget", "spent", "used", "forecast", "runs out", "action")
    for row in rows:
        currency, forecast = row["currency"], row["forecast"]
        table.add_row(
            row["kind"], row["name"], _money(row["amount"], currency),
            _money(row["spent"], currency), f"{row['used_ratio']:.0%}",
            _money(forecast["projected"], currency), forecast["runs_out_at"] or "-",
            row["action"],
        )  # fmt: skip
    out.print(table)


@budgets_app.command("set")
def set_budget(
    kind: Annotated[str, typer.Argument(help="team or project")],
    name: str,
    amount: Annotated[float, typer.Option("--amount", help="Per calendar month")],
    action: Annotated[
        str, typer.Option("--action", help="At 100%: warn, block-new or end")
    ] = "warn",
    threshold: Annotated[
        list[int] | None, typer.Option("--threshold", help="Percent; repeatable (50, 80, 100)")
    ] = None,
) -> None:
    body: dict[str, Any] = {"amount": amount, "action": action}
    if threshold:
        body["thresholds"] = threshold
    saved = _call("PUT", f"/budgets/{kind}/{name}", json=body)
    out.print(
        f"{saved['kind']} {saved['name']}: {_money(saved['amount'], saved['currency'])} a month, "
        f"{saved['action']} at 100%; spent {_money(saved['spent'], saved['currency'])}"
    )


@budgets_app.command("delete")
def delete(kind: str, name: str) -> None:
    out.print(_call("DELETE", f"/budgets/{kind}/{name}")["message"])


@budgets_app.command("forecast")
def forecast(
    kind: Annotated[str, typer.Option("--kind", help="team or project")] = "team",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """This month's spend and forecast of every team (or project), budget or not."""
    rows = _call("GET", "/forecasts", params={"kind": kind})
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(kind, "spent", "now per hour", "committed", "forecast")
    for row in rows:
        currency = row["currency"]
        table.add_row(
            row["name"], _money(row["spent"], currency), _money(row["hourly_now"], currency),
            _money(row["committed"], currency), _money(row["projected"], currency),
        )  # fmt: skip
    out.print(table)
