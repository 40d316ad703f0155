"""``sandman network status`` and ``sandman network uninstall``: the firewall rules
that seal the session network, listed, checked and removed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from sandman.config import Settings
from sandman.errors import SandmanError
from sandman.runtime.docker.firewall import deployments, owned
from sandman.runtime.docker.iptables import Iptables, unseal
from sandman.store.database import Database
from sandman.store.models import Meta

network_app = typer.Typer(
    help="The firewall rules that seal the session network.", no_args_is_help=True
)
out = Console(soft_wrap=True, highlight=False)  # a rule stays on one line, for grep
err = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option(help="State directory")]
DeploymentOption = Annotated[
    str | None,
    typer.Option(help="A deployment id (default: the one of this data directory's database)"),
]


def _settings(data_dir: Path | None) -> Settings:
    try:
        given: dict[str, Any] = {"data_dir": data_dir} if data_dir is not None else {}
        return Settings(**given)
    except ValidationError as exc:
        err.print(f"[red]sandman: invalid settings: {exc}[/red]")
        raise typer.Exit(2) from None


def _deployment(settings: Settings) -> str:
    """The deployment id recorded in the database, without creating one."""
    url = settings.effective_database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        err.print(f"[red]sandman: no database at {url}; name the deployment (--deployment)[/red]")
        raise typer.Exit(2)
    db = Database(url)
    try:
        with db.read() as tx:
            row = tx.get(Meta, "deployment_id")
    except SQLAlchemyError as exc:
        err.print(f"[red]sandman: cannot read the deployment id from {url}: {exc}[/red]")
        raise typer.Exit(2) from None
    finally:
        db.dispose()
    if row is None:
        err.print(f"[red]sandman: {url} records no deployment; name it (--deployment)[/red]")
        raise typer.Exit(2)
    return str(row.value)


def _drift(settings: Settings, deployment: str) -> list[str] | None:
    """What this deployment's rules lack, as restore lines; None when Docker cannot say
    what they should be (no engine, no network)."""
    from sandman.runtime import make_runtime
    from sandman.runtime.docker import DockerRuntime

    runtime: Any = make_runtime(settings, deployment)
    if not isinstance(runtime, DockerRuntime) or runtime.sealer is None:
        return None
    try:
        attrs = runtime.network_attrs()
    except SandmanError as exc:
        err.print(f"[yellow]cannot check against the session network: {exc.message}[/yellow]")
        return None
    if attrs is None:
        err.print(f"[yellow]the session network {settings.network_name} does not exist[/yellow]")
        return None
    return [line for s in runtime.sealer.statuses(attrs) for line in s.repairs]


@network_app.command("status")
def status(data_dir: DataDir = None, deployment: DeploymentOption = None) -> None:
    """List every deployment's rules and check this one's; exit 1 when they are
    missing or differ from what Sandman installs."""
    settings = _settings(data_dir)
    ours = deployment or _deployment(settings)
    for family in (4, 6):
        tool = Iptables(family)
        try:
            table = tool.listing()
        except SandmanError as exc:
            if family == 4:
                raise
            err.print(f"[yellow]{tool.name}: {exc.message}[/yellow]")
            continue
        for found in deployments(table):
            mark = " (this deployment)" if found == ours else ""
            out.print(f"[bold]{tool.name}: deployment {found}{mark}[/bold]")
            for line in owned(table, found):
                out.print(f"  {line}", markup=False)
    if not settings.seal_network:
        out.print("Sealing is off (SANDMAN_SEAL_NETWORK=false): sessions can reach this host.")
        return
    drift = _drift(settings, ours)
    if drift is None:
        raise typer.Exit(1)
    if drift:
        out.print(
            f"The rules of deployment {ours} are missing or differ; a running Sandman puts "
            "them back on its next reconciler pass. Wanted:"
        )
        for line in drift:
            out.print(f"  {line}", markup=False)
        raise typer.Exit(1)
    out.print(f"The rules of deployment {ours} are in place (egress: {settings.egress}).")


@network_app.command("uninstall")
def uninstall(data_dir: DataDir = None, deployment: DeploymentOption = None) -> None:
    """Remove one deployment's rules (and nothing of Docker's, the host's or another
    deployment's). A running Sandman puts them back: stop it first."""
    settings = _settings(data_dir)
    ours = deployment or _deployment(settings)
    try:
        removed = unseal(ours)
    except ValueError as exc:
        err.print(f"[red]sandman: {exc}[/red]")
        raise typer.Exit(2) from None
    for line in removed:
        out.print(f"removed {line}", markup=False)
    if not removed:
        out.print(f"Deployment {ours} has no rules here.")
