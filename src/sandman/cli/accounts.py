"""``sandman users | teams | projects | tokens | audit``: accounts through the API
(readable tables, or ``--json``), and two commands on the server's own files:
``users import`` and ``audit verify``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from sandman.cli.client import _call, err, given, out

users_app = typer.Typer(help="Users: create, change, disable, import.", no_args_is_help=True)
teams_app = typer.Typer(help="Teams and their members.", no_args_is_help=True)
projects_app = typer.Typer(help="Projects (each in one team).", no_args_is_help=True)
tokens_app = typer.Typer(help="Personal API tokens.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]
DataDir = Annotated[Path | None, typer.Option(help="State directory (on the server)")]


def _show(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    out.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}:{v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


USER_COLUMNS = ["user_id", "role", "status", "display_name", "email", "teams", "last_seen_at"]


@users_app.command("list")
def users_list(
    status: Annotated[str | None, typer.Option(help="active or disabled")] = None,
    as_json: Json = False,
) -> None:
    _show(_call("GET", "/users", params=given(status=status)), USER_COLUMNS, as_json)


@users_app.command("show")
def users_show(user_id: str) -> None:
    out.print_json(json.dumps(_call("GET", f"/users/{user_id}")))


@users_app.command("create")
def users_create(
    user_id: str,
    display_name: Annotated[str | None, typer.Option("--name")] = None,
    email: Annotated[str | None, typer.Option()] = None,
    role: Annotated[str | None, typer.Option(help="admin, operator or user")] = None,
    team: Annotated[str | None, typer.Option(help="Default team (joins it)")] = None,
    as_json: Json = False,
) -> None:
    body = given(
        user_id=user_id, display_name=display_name, email=email, role=role, default_team=team
    )
    _show([_call("POST", "/users", json=body)], USER_COLUMNS, as_json)


@users_app.command("update")
def users_update(
    user_id: str,
    display_name: Annotated[str | None, typer.Option("--name")] = None,
    email: Annotated[str | None, typer.Option()] = None,
    role: Annotated[str | None, typer.Option(help="admin, operator or user")] = None,
    status: Annotated[str | None, typer.Option(help="active or disabled")] = None,
    default_team: Annotated[str | None, typer.Option()] = None,
    default_project: Annotated[str | None, typer.Option()] = None,
    as_json: Json = False,
) -> None:
    body = given(
        display_name=display_name,
        email=email,
        role=role,
        status=status,
        default_team=default_team,
        default_project=default_project,
    )
    _show([_call("PATCH", f"/users/{user_id}", json=body)], USER_COLUMNS, as_json)


@users_app.command("disable")
def users_disable(user_id: str) -> None:
    """End the user's sessions and revoke their tokens; their workspace is kept."""
    user = _call("DELETE", f"/users/{user_id}")
    out.print(f"user {user['user_id']} is {user['status']}; their workspace is kept")


def read_entries(path: Path) -> list[dict[str, Any]]:
    """A CSV file (a header row; ``teams`` as ``ml;vision:lead``) or a YAML list."""
    text = path.read_text()
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        return [{k: v for k, v in row.items() if v not in (None, "")} for row in rows]
    loaded = yaml.safe_load(text)
    if isinstance(loaded, dict) and "users" in loaded:
        loaded = loaded["users"]
    if not isinstance(loaded, list) or not all(isinstance(e, dict) for e in loaded):
        raise typer.BadParameter(f"{path}: expected a list of users (or users: [...])")
    return loaded


@users_app.command("import")
def users_import(
    path: Annotated[Path, typer.Argument(help="users.csv or users.yaml")],
    data_dir: DataDir = None,
) -> None:
    """Create or update users from a file, on the server; re-running changes nothing."""
    from sandman.cli.main import _core, _settings
    from sandman.errors import SandmanError

    entries = read_entries(path)
    core = _core(_settings(data_dir=data_dir), with_gateway=False)
    try:
        result = core.accounts.directory.import_users(entries)
    except SandmanError as exc:
        err.print(f"[red]sandman: {exc.message}[/red]")
        raise typer.Exit(1) from None
    finally:
        core.stop()
    for kind in ("created", "updated", "unchanged"):
        names = result[kind]
        out.print(f"{kind}: {len(names)}" + (f" ({', '.join(names)})" if names else ""))


TEAM_COLUMNS = ["name", "members", "projects", "description"]


@teams_app.command("list")
def teams_list(as_json: Json = False) -> None:
    _show(_call("GET", "/teams"), TEAM_COLUMNS, as_json)


@teams_app.command("show")
def teams_show(name: str) -> None:
    out.print_json(json.dumps(_call("GET", f"/teams/{name}")))


@teams_app.command("create")
def teams_create(name: str, description: Annotated[str | None, typer.Option()] = None) -> None:
    _show(
        [_call("POST", "/teams", json=given(name=name, description=description))],
        TEAM_COLUMNS,
        False,
    )


@teams_app.command("delete")
def teams_delete(name: str) -> None:
    out.print(_call("DELETE", f"/teams/{name}")["message"])


@teams_app.command("add")
def teams_add(
    name: str,
    user_id: str,
    lead: Annotated[bool, typer.Option("--lead", help="As the team's lead")] = False,
) -> None:
    """Add USER_ID to team NAME (or change their role in it)."""
    role = "lead" if lead else "member"
    _show(
        [_call("PUT", f"/teams/{name}/members/{user_id}", json={"role": role})], TEAM_COLUMNS, False
    )


@teams_app.command("remove")
def teams_remove(name: str, user_id: str) -> None:
    _show([_call("DELETE", f"/teams/{name}/members/{user_id}")], TEAM_COLUMNS, False)


PROJECT_COLUMNS = ["name", "team", "description", "created_at"]


@projects_app.command("list")
def projects_list(
    team: Annotated[str | None, typer.Option()] = None, as_json: Json = False
) -> None:
    _show(_call("GET", "/projects", params=given(team=team)), PROJECT_COLUMNS, as_json)


@projects_app.command("create")
def projects_create(
    name: str,
    team: Annotated[str, typer.Option(help="The team it belongs to")],
    description: Annotated[str | None, typer.Option()] = None,
) -> None:
    body = given(name=name, team=team, description=description)
    _show([_call("POST", "/projects", json=body)], PROJECT_COLUMNS, False)


@projects_app.command("delete")
def projects_delete(name: str) -> None:
    out.print(_call("DELETE", f"/projects/{name}")["message"])


TOKEN_COLUMNS = ["id", "user_id", "name", "prefix", "scopes", "expires_at", "last_used_at"]


@tokens_app.command("list")
def tokens_list(
    user_id: Annotated[str | None, typer.Option("--user", help="Whose (admins); * for all")] = None,
    as_json: Json = False,
) -> None:
    rows = _call("GET", "/tokens", params=given(user_id=user_id))
    for row in rows:
        if row.get("revoked_at"):
            row["expires_at"] = f"revoked {row['revoked_at']}"
    _show(rows, TOKEN_COLUMNS, as_json)


@tokens_app.command("create")
def tokens_create(
    name: str,
    days: Annotated[int | None, typer.Option("--days", help="Expires after this many days")] = None,
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="read, write, admin (repeatable)")
    ] = None,
    user_id: Annotated[str | None, typer.Option("--user", help="For another user (admins)")] = None,
) -> None:
    """Mint a token; the secret is printed this once."""
    body = given(name=name, expires_in_days=days, scopes=scope, user_id=user_id)
    created = _call("POST", "/tokens", json=body)
    err.print(f"token {created['name']} ({created['id']}) for {created['user_id']}; shown once:")
    out.print(created["token"])


@tokens_app.command("revoke")
def tokens_revoke(token_id: str) -> None:
    revoked = _call("DELETE", f"/tokens/{token_id}")
    out.print(f"token {revoked['name']} ({revoked['id']}) revoked")


AUDIT_COLUMNS = ["seq", "at", "actor", "source", "action", "target", "result"]


@audit_app.command("list")
def audit_list(
    actor: Annotated[str | None, typer.Option()] = None,
    action: Annotated[str | None, typer.Option(help="e.g. session.create or session.*")] = None,
    target: Annotated[str | None, typer.Option()] = None,
    since: Annotated[str | None, typer.Option(help="ISO time with zone")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time with zone")] = None,
    limit: Annotated[int, typer.Option()] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
) -> None:
    params = given(actor=actor, action=action, target=target, since=since, until=until, limit=limit)
    rows = _call("GET", "/audit", params=params)
    if as_json:
        for row in rows:
            out.print(json.dumps(row), soft_wrap=True, highlight=False)
    else:
        _show(rows, AUDIT_COLUMNS, False)


@audit_app.command("verify")
def audit_verify(data_dir: DataDir = None) -> None:
    """Walk the whole chain on the server's database; exit 1 at the first break."""
    from sandman.accounts.audit import AuditLog
    from sandman.cli.main import _settings
    from sandman.store.database import Database

    settings = _settings(data_dir=data_dir)
    db = Database(settings.effective_database_url)
    try:
        result = AuditLog(db).verify()
    finally:
        db.dispose()
    if result.ok:
        out.print(f"audit trail intact: {result.records} records")
        return
    err.print(f"[red]audit trail broken after {result.records} records: {result.problem}[/red]")
    raise typer.Exit(1)
