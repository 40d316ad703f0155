"""``/users/{user_id}/keys``: the public keys a user logs in to the gateway with,
and ``/connections``: the gateway's audit log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session as Db

from sandman.accounts.policy import Action, Caller, Target, require
from sandman.api.auth import Who, allow
from sandman.api.openapi import errors
from sandman.api.routes.deps import sandman
from sandman.api.schemas import PUBLIC_KEY_SCHEMA, UserIdPath, UtcTime
from sandman.core import Sandman
from sandman.domain import validate_user_id
from sandman.errors import InvalidRequest, NotFound
from sandman.services.keys import normalize_public_keys
from sandman.services.passwords import hash_password
from sandman.store.models import Connection, User

router = APIRouter(tags=["users"])
App = Annotated[Sandman, Depends(sandman)]


class KeysBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ssh_public_keys: list[Annotated[str, Field(json_schema_extra=PUBLIC_KEY_SCHEMA)]] = Field(
        description="OpenSSH public keys; at least one.", json_schema_extra={"minItems": 1}
    )


class ConnectionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    user_id: str
    session_id: str | None
    client_address: str
    started_at: UtcTime
    ended_at: UtcTime | None
    bytes_from_client: int
    bytes_to_client: int
    result: str
    reason: str | None
    attempts: int = Field(
        description="Refused attempts this row counts (one per minute, "
        "address and reason); 1 for an accepted connection."
    )


class PasswordBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(
        description="12 to 1024 characters; stored as an scrypt hash.",
        json_schema_extra={"minLength": 12, "maxLength": 1024},
    )


def _keys_out(user: User) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "uid": user.uid,
        "ssh_public_keys": user.ssh_public_keys,
        "password_set": user.password_hash is not None,
    }


def _may_manage(app: Sandman, caller: Caller, user_id: str) -> None:
    validate_user_id(user_id)
    role = app.accounts.directory.role_of(user_id)
    require(caller, Action.KEY_MANAGE, Target(owner=user_id, role=role))


@router.put("/users/{user_id}/keys", name="user.keys_put", responses=errors(403))
def put_keys(user_id: UserIdPath, body: KeysBody, app: App, caller: Who) -> dict[str, Any]:
    """Replace the user's keys; they open the gateway for every later session."""
    _may_manage(app, caller, user_id)
    keys = normalize_public_keys(body.ssh_public_keys)
    if not keys:
        raise InvalidRequest("ssh_public_keys is empty")
    with app.db.transaction() as db:
        user = app.sessions.ensure_user(db, user_id)
        user.ssh_public_keys = keys
        return _keys_out(user)


@router.put("/users/{user_id}/password", name="user.password_put", responses=errors(403, 404))
def put_password(user_id: UserIdPath, body: PasswordBody, app: App, caller: Who) -> dict[str, Any]:
    """Store a hash of the user's gateway password (used only with password auth on)."""
    _may_manage(app, caller, user_id)
    hashed = hash_password(body.password)
    with app.db.transaction() as db:
        user = app.sessions.ensure_user(db, user_id)
        user.password_hash = hashed
        out = _keys_out(user)
    out["password_auth_enabled"] = app.settings.gateway_password_auth
    return out


def _existing_user(db: Db, user_id: str) -> User:
    user = db.get(User, validate_user_id(user_id))
    if user is None:
        raise NotFound(f"no user {user_id!r}")
    return user


@router.delete("/users/{user_id}/password", name="user.password_delete", responses=errors(403, 404))
def delete_password(user_id: UserIdPath, app: App, caller: Who) -> dict[str, Any]:
    _may_manage(app, caller, user_id)
    with app.db.transaction() as db:
        user = _existing_user(db, user_id)
        user.password_hash = None
        return _keys_out(user)


@router.get("/users/{user_id}/keys", name="user.keys_read", responses=errors(403, 404))
def get_keys(user_id: UserIdPath, app: App, caller: Who) -> dict[str, Any]:
    require(caller, Action.USER_READ, Target(owner=validate_user_id(user_id)))
    with app.db.transaction() as db:
        return _keys_out(_existing_user(db, user_id))


@router.get(
    "/connections",
    name="connection.list",
    response_model=list[ConnectionOut],
    dependencies=[allow(Action.CONNECTION_READ)],
)
def list_connections(
    app: App,
    user_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Connection]:
    """The newest gateway connections, accepted and refused, with bytes each way."""
    query = select(Connection).order_by(Connection.started_at.desc()).limit(limit)
    if user_id is not None:
        query = query.where(Connection.user_id == user_id)
    with app.db.transaction() as db:
        return list(db.scalars(query))
