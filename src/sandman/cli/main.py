"""``sandman serve``, ``sandman image build``, and the top-level command group."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from sandman.cli.client import gpus_command, session_app
from sandman.errors import SandmanError

app = typer.Typer(help="Sandman: per-user GPU containers with SSH.", no_args_is_help=True)
image_app = typer.Typer(help="The workspace image.", no_args_is_help=True)
app.add_typer(image_app, name="image")
app.add_typer(session_app, name="session")
app.command("gpus", help="List GPUs and their MIG instances.")(gpus_command)
console = Console(stderr=True)


def _given(**flags: Any) -> dict[str, Any]:
    """Only the flags the admin actually gave, so env vars fill the rest."""
    return {name: value for name, value in flags.items() if value is not None}


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
    ssh_public_host: Annotated[str | None, typer.Option(help="Host name users ssh to")] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING")] = None,
) -> None:
    """Run the API, the reaper and the reconciler in one process."""
    import uvicorn

    from sandman.api.app import create_app
    from sandman.config import Settings
    from sandman.core import Sandman

    try:
        settings = Settings(
            **_given(
                host=host,
                port=port,
                data_dir=data_dir,
                db_path=db,
                workspace_root=workspace_root,
                ttl_check_interval=ttl_check_interval,
                gpu_backend=gpu_backend,
                gpu_topology=gpu_topology,
                ssh_public_host=ssh_public_host,
                log_level=log_level,
            )
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        console.print(f"[red]sandman: invalid settings: {problems}[/red]")
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        core = Sandman(settings, announce=lambda text: console.print(text, style="bold"))
    except SandmanError as exc:
        console.print(f"[red]sandman: {exc.message}[/red]")
        raise typer.Exit(2) from None
    if core.inventory.simulated:
        console.print(
            f"[bold yellow]SIMULATED GPUs ({settings.gpu_topology}): no real GPU is "
            "handed to containers. Use --gpu-backend nvml on a GPU server.[/bold yellow]"
        )
    console.print(
        f"Sandman API on http://{settings.host}:{settings.port} (docs at /docs); "
        f"data in {settings.data_dir.resolve()}"
    )
    try:
        uvicorn.run(
            create_app(core),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
        )
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
