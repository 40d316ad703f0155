"""``sandman serve``, ``sandman image build``, and the top-level command group."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from sandman.cli.accounts import audit_app, projects_app, teams_app, tokens_app, users_app
from sandman.cli.budgets import budgets_app
from sandman.cli.capacity import advice_command, capacity_command
from sandman.cli.client import given, gpus_command, queue_command, session_app
from sandman.cli.environments import env_app
from sandman.cli.login import login_command, logout_command
from sandman.cli.network import network_app
from sandman.cli.quotas import quotas_app
from sandman.cli.usage import usage_command
from sandman.cli.workspaces import workspaces_app
from sandman.config import Settings
from sandman.core import Sandman
from sandman.errors import ConfigurationError, SandmanError

app = typer.Typer(help="Sandman: per-user GPU containers with SSH.", no_args_is_help=True)
image_app = typer.Typer(help="The workspace image.", no_args_is_help=True)
app.add_typer(image_app, name="image")
ca_app = typer.Typer(help="Sandman's SSH user certificate authority.", no_args_is_help=True)
app.add_typer(ca_app, name="ca")
app.add_typer(session_app, name="session")
app.add_typer(network_app, name="network")
app.add_typer(workspaces_app, name="workspaces")
app.command("gpus", help="List GPUs and their MIG instances.")(gpus_command)
app.command("queue", help="The requests waiting for room, with their ETAs.")(queue_command)
app.command("capacity", help="Demand against capacity, per profile.")(capacity_command)
app.command("advice", help="The MIG layout that would have served the most.")(advice_command)
app.add_typer(users_app, name="users")
app.add_typer(teams_app, name="teams")
app.add_typer(projects_app, name="projects")
app.add_typer(tokens_app, name="tokens")
app.add_typer(audit_app, name="audit")
app.add_typer(quotas_app, name="quotas")
app.add_typer(budgets_app, name="budgets")
app.add_typer(env_app, name="env")
app.command("usage", help="GPU usage and its cost per user, team, project or model.")(usage_command)
app.command("login")(login_command)
app.command("logout")(logout_command)
console = Console(stderr=True)


def _settings(**flags: Any) -> Settings:
    try:
        return Settings(**given(**flags))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        console.print(f"[red]sandman: invalid settings: {problems}[/red]")
        raise typer.Exit(2) from None


def _core(settings: Settings, with_gateway: bool = True) -> Sandman:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.log_level.upper() != "DEBUG":
        # asyncssh logs every command and environment users send at INFO; those can
        # hold secrets, so Sandman's own connection log is the record instead.
        logging.getLogger("asyncssh").setLevel(logging.WARNING)
    try:
        return Sandman(
            settings,
            announce=lambda text: console.print(text, style="bold"),
            with_gateway=with_gateway,
            show_secrets=console.is_terminal,
        )
    except SandmanError as exc:
        console.print(f"[red]sandman: {exc.message}[/red]")
        raise typer.Exit(2) from None


@ca_app.command("rotate")
def ca_rotate(
    data_dir: Annotated[Path | None, typer.Option(help="State directory")] = None,
) -> None:
    """Make a new CA; sessions that trust the old one stay reachable until they end."""
    from datetime import timedelta

    from sandman.services.certificates import UserCA

    settings = _settings(data_dir=data_dir)
    ca = UserCA(settings.data_dir / "ca", timedelta(minutes=settings.max_ttl_minutes))
    public = ca.rotate()
    console.print(
        f"New user CA: {public}\nSessions started before now trust the old CA; the gateway "
        f"signs for both until those sessions have ended (at most "
        f"{settings.max_ttl_minutes} minutes)."
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="API listen address")] = None,
    port: Annotated[int | None, typer.Option(help="API listen port")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="State directory")] = None,
    db: Annotated[Path | None, typer.Option("--db", help="SQLite file")] = None,
    workspace_root: Annotated[Path | None, typer.Option(help="Parent of workspaces")] = None,
    ttl_check_interval: Annotated[str | None, typer.Option(help="e.g. 1m, 30s")] = None,
    gpu_backend: Annotated[str | None, typer.Option(help="simulated | nvml")] = None,
    gpu_topology: Annotated[str | None, typer.Option(help="Preset or YAML file")] = None,
    ssh_mode: Annotated[str | None, typer.Option(help="gateway | direct | both")] = None,
    ssh_listen: Annotated[str | None, typer.Option(help="Gateway HOST:PORT")] = None,
    ssh_public_host: Annotated[str | None, typer.Option(help="Host name users ssh to")] = None,
    ssh_port_start: Annotated[
        int | None, typer.Option(help="First host port for sessions' sshd")
    ] = None,
    ssh_port_end: Annotated[
        int | None, typer.Option(help="Last host port for sessions' sshd")
    ] = None,
    sshpiper_config: Annotated[
        Path | None, typer.Option("--sshpiper-config", "--piper-config", help="pipe.yaml to keep")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING")] = None,
) -> None:
    """Run the API, the SSH gateway, the reaper and the reconciler in one process."""
    import uvicorn

    from sandman.api.app import create_app

    settings = _settings(
        host=host,
        port=port,
        data_dir=data_dir,
        db_path=db,
        workspace_root=workspace_root,
        ttl_check_interval=ttl_check_interval,
        gpu_backend=gpu_backend,
        gpu_topology=gpu_topology,
        ssh_mode=ssh_mode,
        ssh_listen=ssh_listen,
        ssh_public_host=ssh_public_host,
        ssh_port_start=ssh_port_start,
        ssh_port_end=ssh_port_end,
        sshpiper_config=sshpiper_config,
        log_level=log_level,
    )
    core = _core(settings)
    try:
        core.runtime.prepare()  # refuse a setting that cannot be safe before serving anyone
    except ConfigurationError as exc:
        console.print(f"[red]sandman: {exc.message}[/red]")
        core.stop()
        raise typer.Exit(2) from None
    except SandmanError as exc:
        console.print(f"[yellow]sandman: {exc.message}; serving degraded[/yellow]")
    if core.inventory.simulated:
        console.print(
            f"[bold yellow]SIMULATED GPUs ({settings.gpu_topology}): no real GPU is "
            "handed to containers. Use --gpu-backend nvml on a GPU server.[/bold yellow]"
        )
    gateway = f"; SSH gateway on {settings.ssh_listen}" if settings.ssh_mode != "direct" else ""
    console.print(
        f"Sandman API on http://{settings.host}:{settings.port} (docs at /docs){gateway}; "
        f"data in {settings.data_dir.resolve()}"
    )
    apps = settings.apps_listen_address
    try:
        if apps is None:
            uvicorn.run(
                create_app(core),
                host=settings.host,
                port=settings.port,
                log_level=settings.log_level.lower(),
            )
        else:
            from sandman.web.apps_app import create_apps_app
            from sandman.web.apps_serve import SharedLoopServer, run_together

            console.print(
                f"JupyterLab and VS Code on {settings.effective_apps_url} "
                f"(listening on {apps[0]}:{apps[1]})"
            )
            level = settings.log_level.lower()
            api = uvicorn.Config(
                create_app(core), host=settings.host, port=settings.port, log_level=level
            )
            web = uvicorn.Config(create_apps_app(core), host=apps[0], port=apps[1], log_level=level)
            run_together([SharedLoopServer(api), SharedLoopServer(web)])
    finally:
        core.stop()


@app.command()
def gateway(
    data_dir: Annotated[
        Path | None, typer.Option(help="State directory (shared with serve)")
    ] = None,
    db: Annotated[Path | None, typer.Option("--db", help="SQLite file")] = None,
    ssh_listen: Annotated[str | None, typer.Option(help="Gateway HOST:PORT")] = None,
    ssh_public_host: Annotated[str | None, typer.Option(help="Host name users ssh to")] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING")] = None,
) -> None:
    """Run the SSH gateway alone, sharing the database of `sandman serve`."""
    import asyncio

    settings = _settings(
        data_dir=data_dir,
        db_path=db,
        ssh_listen=ssh_listen,
        ssh_public_host=ssh_public_host,
        log_level=log_level,
    )
    if settings.ssh_mode == "direct":
        console.print("[red]sandman: ssh_mode is direct: there is no gateway to run[/red]")
        raise typer.Exit(2)
    core = _core(settings.model_copy(update={"run_gateway": True}))

    async def run() -> None:
        await core.start_gateway()
        console.print(f"SSH gateway on {settings.ssh_listen}")
        try:
            await asyncio.Event().wait()
        finally:
            await core.stop_gateway()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    finally:
        core.stop()


@image_app.command("build")
def image_build(
    from_image: Annotated[
        str | None, typer.Option("--from", help="Base image (e.g. a CUDA image) instead of Debian")
    ] = None,
    mirror: Annotated[str | None, typer.Option(help="Debian mirror (default: apt sources)")] = None,
    tag: Annotated[str, typer.Option(help="Image tag")] = "sandman-workspace:latest",
    force: Annotated[bool, typer.Option(help="Rebuild even if it exists")] = False,
) -> None:
    """Build the workspace image locally (debootstrap, or a layer over --from)."""
    from sandman.image.build import build_workspace_image, image_is_current

    if image_is_current(tag) and not force:
        console.print(f"{tag} is current; --force rebuilds it")
        return
    build_workspace_image(
        tag, base_image=from_image, mirror=mirror, log=lambda line: console.print(line)
    )


def main() -> None:
    try:
        app()
    except SandmanError as exc:
        console.print(f"[red]sandman: {exc.message}[/red]")
        sys.exit(1)
