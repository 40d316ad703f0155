"""The admin client: talks to the API with ``SANDMAN_URL`` and ``SANDMAN_ADMIN_TOKEN``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from sandman.cli import credentials

session_app = typer.Typer(help="Manage sessions through the API.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)


def given(**values: Any) -> dict[str, Any]:
    """Only the values actually given (not None), so defaults fill the rest."""
    return {name: value for name, value in values.items() if value is not None}


def _client() -> httpx.Client:
    url = os.environ.get("SANDMAN_URL", "http://127.0.0.1:8080")
    token = os.environ.get("SANDMAN_ADMIN_TOKEN") or os.environ.get("SANDMAN_TOKEN")
    saved = None if token else credentials.load()  # what `sandman login` saved
    if saved is not None:
        url, token = os.environ.get("SANDMAN_URL", saved[0]), saved[1]
    if not token:
        token_file = Path(os.environ.get("SANDMAN_DATA_DIR", ".sandman")) / "admin_token"
        if token_file.exists():
            token = token_file.read_text().strip()
    if not token:
        err.print(
            "[red]run `sandman login`, or set SANDMAN_TOKEN (a personal token) or "
            "SANDMAN_ADMIN_TOKEN (the admin token printed at first start)[/red]"
        )
        raise typer.Exit(2)
    return httpx.Client(
        base_url=f"{url.rstrip('/')}/api/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(300.0, connect=10.0),
    )


def _call(method: str, path: str, **kwargs: Any) -> Any:
    try:
        with _client() as client:
            response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        err.print(f"[red]cannot reach Sandman: {exc}[/red]")
        raise typer.Exit(1) from None
    body = response.json() if response.content else {}
    if response.status_code >= 400:
        err.print(f"[red]{response.status_code}: {body.get('error', body)}[/red]")
        raise typer.Exit(1)
    return body


def _sessions_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("session", "user", "status", "GPU", "ssh", "expires")
    for row in rows:
        gpu = row.get("mig_profile") or ("whole GPU" if row.get("gpu_uuid") else "-")
        if row.get("gpu_share") is not None:
            gpu = f"shared {row['gpu_share']:g}"
        table.add_row(
            row["session_id"][:8],
            row["user_id"],
            row["status"],
            gpu,
            row["ssh_command"],
            row["expires_at"] or "-",
        )
    return table


@session_app.command("create")
def create(
    user_id: Annotated[str | None, typer.Argument(help="Whose (default: yours)")] = None,
    ttl: Annotated[int | None, typer.Option("--ttl", help="Minutes")] = None,
    mig_profile: Annotated[str | None, typer.Option("--mig-profile")] = None,
    gpu_count: Annotated[int | None, typer.Option("--gpu-count")] = None,
    shared: Annotated[
        bool, typer.Option("--shared", help="A replica of a shared GPU (time-slicing or MPS)")
    ] = False,
    key: Annotated[
        list[Path] | None, typer.Option("--key", help="Public key file (repeatable)")
    ] = None,
    save_key: Annotated[
        Path | None, typer.Option("--save-key", help="Where to write a generated private key")
    ] = None,
    team: Annotated[str | None, typer.Option("--team", help="Charge this team")] = None,
    project: Annotated[str | None, typer.Option("--project", help="Charge this project")] = None,
    priority: Annotated[
        str | None, typer.Option("--priority", help="low, normal (default) or high")
    ] = None,
    queue: Annotated[
        bool, typer.Option("--queue", help="Wait in the queue when nothing fits now")
    ] = False,
    environment: Annotated[
        str | None, typer.Option("--env", help="Environment (sandman env list; default base)")
    ] = None,
) -> None:
    """Start a session for USER_ID (default: the token's own user)."""
    body: dict[str, Any] = {"user_id": user_id} if user_id else {}
    body.update(given(team=team, project=project, priority=priority, environment=environment))
    if queue:
        body["queue"] = True
    if ttl is not None:
        body["ttl_minutes"] = ttl
    if mig_profile is not None:
        body["mig_profile"] = mig_profile
    if gpu_count is not None:
        body["gpu_count"] = gpu_count
    if shared:
        body["shared"] = True
    if key:
        body["ssh_public_keys"] = [p.read_text().strip() for p in key]
    created = _call("POST", "/sessions", json=body)
    private = created.pop("ssh_private_key", None)
    out.print(_sessions_table([created]))
    if created["status"] == "queued":
        eta = created.get("eta") or "unknown"
        out.print(
            f"queued at position {created['queue_position']}, expected to start {eta}: "
            f"{created.get('reason')}; `sandman queue` shows the queue, "
            f"`sandman session delete {created['session_id']}` cancels"
        )
    if private:
        target = save_key or Path(f"{created['user_id']}_sandman_key")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(private)
        out.print(f"private key written to {target} (mode 0600); connect with:")
        out.print(f"  {created['ssh_command']} -i {target}")
    else:
        out.print(f"connect with: {created['ssh_command']}")
    for name, url in (created.get("apps") or {}).items():
        out.print(f"{name}: {url}")


@session_app.command("list")
def list_sessions(
    all_: Annotated[bool, typer.Option("--all", help="Include ended sessions")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    rows = _call("GET", "/sessions", params={"status": "all" if all_ else "active"})
    if as_json:
        out.print_json(json.dumps(rows))
    else:
        out.print(_sessions_table(rows))


@session_app.command("show")
def show(session_id: str) -> None:
    out.print_json(json.dumps(_call("GET", f"/sessions/{session_id}")))


@session_app.command("extend")
def extend(session_id: str, ttl: Annotated[int, typer.Option("--ttl", help="Minutes")]) -> None:
    row = _call("PATCH", f"/sessions/{session_id}", json={"ttl_minutes": ttl})
    out.print(f"session {session_id} now expires at {row['expires_at']}")


@session_app.command("delete")
def delete(session_id: str) -> None:
    out.print(_call("DELETE", f"/sessions/{session_id}")["message"])


def queue_command(
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The requests waiting for room, in the order they will start, with their ETAs."""
    rows = _call("GET", "/queue")
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("#", "session", "user", "team", "priority", "asks", "eta", "why")
    for row in rows:
        table.add_row(
            str(row["queue_position"]),
            row["session_id"][:8],
            row["user_id"],
            row["team"] or "-",
            row["priority"],
            row["asks"],
            row["eta"] or "unknown",
            row["reason"] or "",
        )
    out.print(table)


def gpus_command() -> None:
    body = _call("GET", "/gpus")
    table = Table("#", "name", "uuid", "MIG", "memory", "instances (profile@start: session)")
    for gpu in body["gpus"]:
        instances = ", ".join(
            f"{i['profile']}@{i['start']}" + (f": {i['session_id'][:8]}" if i["session_id"] else "")
            for i in gpu["mig_instances"]
        )
        table.add_row(
            str(gpu["index"]),
            gpu["name"],
            gpu["uuid"],
            gpu["mig_mode"],
            f"{gpu['memory_total'] // 1024**3} GiB",
            instances or "-",
        )
    out.print(table)
    if body.get("simulated"):
        out.print("[yellow]simulated GPUs[/yellow]")
