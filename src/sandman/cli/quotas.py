"""``sandman quotas``: what applies to you (or anyone, for operators), and setting them."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from sandman.cli.client import _call, out

quotas_app = typer.Typer(help="Quotas per user, team and project.", no_args_is_help=True)
LIMITS = (
    "max_sessions",
    "max_slices",
    "guaranteed_slices",
    "max_ttl_minutes",
    "max_gpu_hours_month",
    "allowed_profiles",
    "allowed_models",
    "allowed_images",
    "allowed_priorities",
)


def _limits(limits: dict[str, Any]) -> str:
    return (
        ", ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in limits.items())
        or "-"
    )


@quotas_app.command("show")
def show(
    user_id: Annotated[str | None, typer.Option("--user", help="Whose (default: yours)")] = None,
    team: Annotated[str | None, typer.Option()] = None,
    project: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The quotas set (operators: all) and what applies to a user, with their use."""
    params = {k: v for k, v in {"user_id": user_id, "team": team, "project": project}.items() if v}
    body = _call("GET", "/quotas", params=params)
    if as_json:
        out.print_json(json.dumps(body))
        return
    table = Table("kind", "name", "limits", "sessions", "slices", "GPU-hours this month")
    for row in body["applied"]:
        used = row["used"]
        table.add_row(
            row["kind"], row["name"], _limits(row["limits"]),
            str(used["sessions"]), f"{used['slices']:g}", f"{used['gpu_hours_month']:g}",
        )  # fmt: skip
    if body["applied"]:
        out.print(table)
    listed = Table("kind", "name", "limits", "updated")
    for row in body["quotas"]:
        listed.add_row(row["kind"], row["name"], _limits(row["limits"]), row["updated_at"])
    out.print(listed)


@quotas_app.command("set")
def set_quota(
    kind: Annotated[str, typer.Argument(help="user, team or project")],
    name: Annotated[str, typer.Argument(help="Its name, or 'defaults' for the kind's defaults")],
    limit: Annotated[
        list[str] | None,
        typer.Option("--limit", "-l", help="NAME=VALUE (lists comma-separated); repeatable"),
    ] = None,
) -> None:
    """Set a quota, replacing what was set: e.g. ``sandman quotas set team vision
    -l max_slices=14 -l guaranteed_slices=7``."""
    body: dict[str, Any] = {}
    for item in limit or []:
        key, _, value = item.partition("=")
        if key not in LIMITS:
            raise typer.BadParameter(f"unknown limit {key!r}; known: {', '.join(LIMITS)}")
        if key.startswith("allowed_"):
            body[key] = [v for v in value.split(",") if v]
        else:
            body[key] = float(value) if "." in value or key.endswith("slices") else int(value)
    path = f"/quotas/defaults/{kind}" if name == "defaults" else f"/quotas/{kind}/{name}"
    saved = _call("PUT", path, json=body)
    out.print(f"{saved['kind']} {saved['name']}: {_limits(saved['limits'])}")


@quotas_app.command("delete")
def delete(kind: str, name: str) -> None:
    out.print(_call("DELETE", f"/quotas/{kind}/{name}")["message"])
