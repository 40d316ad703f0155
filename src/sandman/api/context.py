"""Per-request context: a request id on every response, and the audit record of
every change and of every refusal of an authenticated caller.

A pure ASGI middleware (no body buffering): it watches the status that goes out,
and once the response is sent writes the record on a worker thread. The action is
the route's name (``session.create``...), the target its path parameters unless
the route named one (``request.state.audit_target``, e.g. a new session's id).
Unauthenticated refusals stay out of the trail, so a flood cannot grow it.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandman.accounts.audit import Entry
from sandman.accounts.policy import Caller

if TYPE_CHECKING:
    from sandman.core import Sandman

log = logging.getLogger(__name__)
REQUEST_ID_HEADER = b"x-request-id"
GOOD_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def request_id_of(scope: Scope) -> str:
    """The client's ``X-Request-Id`` if it is sane, else a new one."""
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER:
            text = str(value.decode("latin-1"))
            if GOOD_REQUEST_ID.fullmatch(text):
                return text
    return uuid.uuid4().hex


def result_of(status: int) -> str:
    return "ok" if status < 400 else "refused" if status < 500 else "failed"


class RequestContext:
    def __init__(self, app: ASGIApp, core: Sandman) -> None:
        self.app = app
        self.core = core

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (REQUEST_ID_HEADER, request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            await self._audit(scope, state, status, request_id)

    async def _audit(self, scope: Scope, state: dict[str, Any], status: int, rid: str) -> None:
        caller: Caller | None = state.get("caller")
        if caller is None:
            return  # unauthenticated: counted, not recorded
        refused = status in (401, 403)
        if scope["method"] not in CHANGES and not refused:
            return
        route = scope.get("route")
        action = state.get("audit_action") or getattr(route, "name", None) or scope["path"]
        params = scope.get("path_params") or {}
        target = state.get("audit_target") or "/".join(str(v) for v in params.values()) or None
        client = scope.get("client")
        detail = dict(state.get("audit_detail") or {})
        detail["status"] = status
        if caller.token_name:
            detail["via"] = f"token {caller.token_name}"
        elif caller.via != "token":
            detail["via"] = caller.via
        entry = Entry(
            actor=caller.actor,
            action=action,
            target=target,
            result=result_of(status),
            source=client[0] if client else None,
            request_id=rid,
            detail=detail,
        )
        audit = self.core.audit
        try:
            if refused:
                await run_in_threadpool(audit.record_refusal, entry)
            else:
                await run_in_threadpool(audit.record, entry)
        except Exception:
            log.exception("could not write the audit record of %s %s", action, target)
