"""``/tokens``: personal API tokens, and ``/audit``: the audit trail."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from sandman.accounts.policy import Action, Scope, Target, decide, grantable_scopes, require
from sandman.api.auth import Who, allow
from sandman.api.openapi import errors
from sandman.api.routes.deps import sandman
from sandman.api.schemas import UserId, UtcTime
from sandman.core import Sandman
from sandman.errors import InvalidRequest, NotFound

router = APIRouter(tags=["tokens"])
TIME = {"format": "date-time"}
App = Annotated[Sandman, Depends(sandman)]


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="What the token is for.",
    )
    expires_in_days: int | None = Field(None, ge=1, le=3650, description="Default: never.")
    scopes: list[Scope] | None = Field(
        None, description="read, write, admin; default and at most: the caller's own."
    )
    user_id: UserId | None = Field(None, description="Mint for another user (admins only).")


class TokenOut(BaseModel):
    id: str
    user_id: str
    name: str
    prefix: str = Field(description="The token's first characters, to recognise it.")
    scopes: list[str]
    created_by: str
    created_at: UtcTime
    expires_at: UtcTime | None
    last_used_at: UtcTime | None
    revoked_at: UtcTime | None


class CreatedTokenOut(TokenOut):
    token: str = Field(description="The secret: shown this once, kept only as a hash.")


class AuditOut(BaseModel):
    seq: int
    at: UtcTime
    actor: str
    source: str | None
    action: str
    target: str | None
    result: str
    request_id: str | None
    detail: dict[str, Any]
    hash: str


@router.post(
    "/tokens",
    name="token.create",
    status_code=status.HTTP_201_CREATED,
    response_model=CreatedTokenOut,
    responses=errors(403, 404, 409),
)
def create_token(body: TokenBody, app: App, caller: Who, request: Request) -> dict[str, Any]:
    """Mint a personal token; the secret is in ``token``, this once."""
    owner = body.user_id or caller.user_id
    if owner is None:
        raise InvalidRequest("user_id is required with the admin token, which belongs to no user")
    require(caller, Action.TOKEN_CREATE, Target(owner=owner))
    scopes = grantable_scopes(caller, body.scopes)
    view, secret = app.credentials.create_token(
        owner, body.name, scopes, body.expires_in_days, caller.actor
    )
    request.state.audit_target = view.id
    request.state.audit_detail = {"user_id": owner, "name": view.name, "scopes": view.scopes}
    return {**asdict(view), "token": secret}


@router.get("/tokens", name="token.list", response_model=list[TokenOut])
def list_tokens(
    app: App,
    caller: Who,
    user_id: Annotated[str | None, Query(description="Whose (admins; default: yours)")] = None,
) -> list[dict[str, Any]]:
    """The caller's tokens (never their secrets); an admin may name a user, or ``*``."""
    owner = user_id or caller.user_id
    if owner == "*" or owner is None:
        require(caller, Action.TOKEN_READ, Target(owner="*"))
        return [asdict(t) for t in app.credentials.list_tokens(None)]
    require(caller, Action.TOKEN_READ, Target(owner=owner))
    return [asdict(t) for t in app.credentials.list_tokens(owner)]


@router.delete(
    "/tokens/{token_id}",
    name="token.revoke",
    response_model=TokenOut,
    responses=errors(403, 404),
)
def revoke_token(token_id: str, app: App, caller: Who) -> dict[str, Any]:
    """Revoke a token; it stops working at once."""
    token = app.credentials.token(token_id)
    target = Target(owner=token.user_id)
    if not decide(caller, Action.TOKEN_READ, target).allowed:
        raise NotFound(f"no token {token_id!r}")
    require(caller, Action.TOKEN_REVOKE, target)
    return asdict(app.credentials.revoke(token_id))


@router.get(
    "/audit",
    name="audit.list",
    response_model=list[AuditOut],
    dependencies=[allow(Action.AUDIT_READ)],
)
def list_audit(
    app: App,
    actor: Annotated[str | None, Query(max_length=96)] = None,
    action: Annotated[
        str | None, Query(max_length=64, description="An action, or a prefix like session.*")
    ] = None,
    target: Annotated[str | None, Query(max_length=255)] = None,
    since: Annotated[
        str | None, Query(description="From this time (ISO 8601)", json_schema_extra=TIME)
    ] = None,
    until: Annotated[
        str | None, Query(description="Before this time", json_schema_extra=TIME)
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, description="Records before this seq")] = None,
) -> list[Any]:
    """The newest records first (operators and admins)."""
    return list(app.audit.query(actor, action, target, _time(since), _time(until), limit, before))


def _time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"{text!r} is not a time like 2026-12-02T10:00:00Z") from None
    if moment.tzinfo is None:
        raise InvalidRequest("since and until need a time zone (e.g. 2026-12-02T10:00:00Z)")
    return moment
