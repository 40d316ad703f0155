"""HTTP request metrics: a count per (route, status) and a latency histogram per
route, from a pure ASGI middleware (no body buffering, nothing per chunk).

The route is the matched route's template (``/api/v1/sessions/{session_id}``),
never the raw path: ids in paths would make a new series per session.
Requests that match no route are counted as ``unmatched``.
"""

from __future__ import annotations

import time
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["UNMATCHED", "HttpMetrics", "route_of"]

UNMATCHED = "unmatched"


class _Sink(Protocol):
    def http_request(self, route: str, status: int, seconds: float) -> None: ...


def route_of(scope: Scope) -> str:
    """The template of the route that served the request, or ``unmatched``.

    A route of a router included under a prefix (``/api/v1``) knows only its own
    template (``/sessions/{session_id}``); the prefix is the part of the path
    before where that template matches. Sandman's prefixes are plain text.
    """
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not template:
        return UNMATCHED
    regex = getattr(route, "path_regex", None)
    path = str(scope.get("path", ""))
    if regex is not None and not regex.match(path):
        for i, char in enumerate(path):
            if char == "/" and i and regex.match(path[i:]):
                return path[:i] + str(template)
    return str(template)


class HttpMetrics:
    def __init__(self, app: ASGIApp, sink: _Sink) -> None:
        self.app = app
        self.sink = sink

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.sink.http_request(route_of(scope), status, time.perf_counter() - started)
