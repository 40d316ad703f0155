"""``sandman env``: list, register and remove environments (API), and build their
images on this machine (Docker)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sandman.cli.client import _call, out

env_app = typer.Typer(
    help="Environments: what sessions start from (image, web apps, allowed teams).",
    no_args_is_help=True,
)
console = Console(stderr=True)


@env_app.command("list")
def list_environments(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The environments you may start sessions from (operators and admins: all)."""
    rows = _call("GET", "/environments")
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("name", "image", "apps", "GPU profile", "teams", "description")
    for row in rows:
        name = row["name"] + (" (built in)" if row["builtin"] else "")
        table.add_row(
            name, row["image"], ", ".join(row["apps"]), row["default_profile"] or "-",
            ", ".join(row["allowed_teams"]) or "all", row["description"],
        )  # fmt: skip
    out.print(table)


def _body(
    image: str | None,
    description: str | None,
    apps: str | None,
    profile: str | None,
    teams: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if image is not None:
        body["image"] = image
    if description is not None:
        body["description"] = description
    if apps is not None:
        body["apps"] = [a.strip() for a in apps.split(",") if a.strip()]
    if profile is not None:
        body["default_profile"] = profile or None
    if teams is not None:
        body["allowed_teams"] = [t.strip() for t in teams.split(",") if t.strip()]
    return body


Image = Annotated[str | None, typer.Option("--image", help="The image sessions run")]
Description = Annotated[str | None, typer.Option("--description")]
Apps = Annotated[
    str | None, typer.Option("--apps", help="Comma-separated: shell, jupyterlab, vscode")
]
Profile = Annotated[str | None, typer.Option("--profile", help="Default GPU profile ('' none)")]
Teams = Annotated[
    str | None, typer.Option("--teams", help="Comma-separated allowed teams ('' all)")
]


@env_app.command("add")
def add(
    name: str,
    image: Image = None,
    description: Description = None,
    apps: Apps = None,
    profile: Profile = None,
    teams: Teams = None,
    update: Annotated[
        bool, typer.Option("--update", help="Change an existing one (a built-in too)")
    ] = False,
) -> None:
    """Register an environment (or with --update change one): e.g. ``sandman env add
    cuda --image my-cuda-workspace:12 --apps shell,jupyterlab --teams vision``."""
    body = _body(image, description, apps, profile, teams)
    if update:
        row = _call("PATCH", f"/environments/{name}", json=body)
    else:
        if image is None:
            raise typer.BadParameter("--image is required for a new environment")
        row = _call("POST", "/environments", json={"name": name, **body})
    out.print_json(json.dumps(row))


@env_app.command("remove")
def remove(name: str) -> None:
    """Remove a registered environment (a changed built-in returns to its defaults)."""
    out.print(_call("DELETE", f"/environments/{name}")["message"])


@env_app.command("build")
def build(
    name: str,
    from_image: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Build on this workspace image (e.g. one built with `sandman image build "
            "--from <a CUDA image> --tag ...`) instead of sandman-workspace:latest",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if it is current")] = False,
) -> None:
    """Build sandman-NAME:latest on this machine's Docker engine (base, jupyter,
    pytorch, tensorflow), with what it is built on first when missing or stale."""
    from sandman.image.environment_build import build_environment_image
    from sandman.image.recipes import environment_image

    built = build_environment_image(
        name, base_image=from_image, force=force, log=lambda line: console.print(line)
    )
    tag = environment_image(name)
    console.print(f"built {tag}" if built else f"{tag} is current; --force rebuilds it")
