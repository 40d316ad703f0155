"""``sandman workspaces``: quotas on this host's workspaces, run beside ``serve``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from sandman.errors import SandmanError
from sandman.sizes import format_size

if TYPE_CHECKING:
    from sandman.core import Sandman

workspaces_app = typer.Typer(help="Users' workspaces and their quotas.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)  # paths and messages stay whole

DataDir = Annotated[Path | None, typer.Option(help="State directory (shared with serve)")]
WorkspaceRoot = Annotated[Path | None, typer.Option(help="Parent of workspaces")]
User = Annotated[str | None, typer.Option("--user", help="One user (default: every user)")]


def _open(data_dir: Path | None, workspace_root: Path | None) -> Sandman:
    from sandman.cli.main import _core, _settings

    settings = _settings(data_dir=data_dir, workspace_root=workspace_root)
    return _core(settings, with_gateway=False)


def _each(
    core: Sandman, user: str | None, act: Callable[[str], str | bool | None], done: str, idle: str
) -> None:
    """``act`` on one user or all; a refusal is reported and the others go on."""
    failed = 0
    for user_id in [user] if user else core.workspaces.users():
        try:
            said = act(user_id)
        except SandmanError as exc:
            failed += 1
            console.print(f"[red]{user_id}: {exc.message}[/red]")
            continue
        console.print(said if isinstance(said, str) else f"{user_id}: {done if said else idle}")
    if failed:
        raise typer.Exit(1)


@workspaces_app.command("migrate")
def migrate(
    user: User = None, data_dir: DataDir = None, workspace_root: WorkspaceRoot = None
) -> None:
    """Move plain workspace directories into images of their quota, verified byte for
    byte before the swap; the original is kept under <workspace root>/.migrated.
    Refused for a user with a session."""
    core = _open(data_dir, workspace_root)
    try:
        _each(core, user, core.workspaces.migrate, "moved", "nothing to move")
    finally:
        core.stop()


@workspaces_app.command("unmount")
def unmount(
    user: User = None, data_dir: DataDir = None, workspace_root: WorkspaceRoot = None
) -> None:
    """Unmount workspace images (to uninstall, or move the root); refused for a user
    with a session. `sandman serve` mounts them again when it starts."""
    core = _open(data_dir, workspace_root)
    try:
        _each(core, user, core.workspaces.release, "unmounted", "not mounted")
    finally:
        core.stop()


@workspaces_app.command("list")
def list_workspaces(data_dir: DataDir = None, workspace_root: WorkspaceRoot = None) -> None:
    """Every user's workspace: how it is kept, its quota and what it holds."""
    core = _open(data_dir, workspace_root)
    try:
        table = Table("user", "storage", "quota", "used", "own quota")
        for user_id in core.workspaces.users():
            found = core.workspaces.get(user_id)
            table.add_row(
                user_id,
                found.storage or "-",
                format_size(found.quota_bytes) if found.quota_bytes is not None else "none",
                format_size(found.used_bytes) if found.used_bytes is not None else "-",
                "yes" if found.own_quota else "",
            )
        Console().print(table)
    finally:
        core.stop()
