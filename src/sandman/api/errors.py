"""The one place where errors become HTTP responses: ``{"error": message, "code": code}``.

The code is one of ``sandman.errors.ERROR_CODES``; the status follows from it.
A 503 that a retry can cure carries ``Retry-After`` in whole seconds; a 405
carries ``Allow``.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from sandman.errors import ERROR_CODES, SandmanError

log = logging.getLogger(__name__)

CODE_FOR_STATUS = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    503: "busy",
}


def error_response(
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    retry_after: float | None = None,
    details: dict[str, object] | None = None,
) -> JSONResponse:
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    body: dict[str, object] = {**(details or {}), "error": message, "code": code}
    return JSONResponse(body, status_code=ERROR_CODES[code], headers=headers or None)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
        message = str(error.get("msg", "invalid"))
        if error.get("type") == "json_invalid":
            return "the request body is not valid JSON"
        if error.get("type") == "model_attributes_type" and tuple(error.get("loc", ())) == (
            "body",
        ):
            return (
                "the request body must be a JSON object, sent with 'Content-Type: application/json'"
            )
        parts.append(f"{location}: {message}" if location else message)
    return "invalid request: " + "; ".join(parts)


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route takes at the request's path (Starlette names only the
    first route's, and a path here has one route per method)."""
    allowed = []
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in app.router.routes):
            allowed.append(method)
    return allowed


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SandmanError)
    async def _domain(_: Request, exc: SandmanError) -> JSONResponse:
        if exc.status_code >= 500:
            log.warning("%s: %s", type(exc).__name__, exc.message)
        headers = {"WWW-Authenticate": "Bearer"} if exc.code == "unauthenticated" else None
        return error_response(exc.code, exc.message, headers, exc.retry_after, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response("invalid_request", _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail) if exc.detail else "error"
        headers = dict(exc.headers or {})
        if exc.status_code == 404 and message == "Not Found":
            message = "no such endpoint"
        elif exc.status_code == 405:
            allowed = ", ".join(allowed_methods(app, request))
            headers["Allow"] = allowed
            message = f"{request.method} is not allowed here; use {allowed}"
        code = CODE_FOR_STATUS.get(exc.status_code)
        if code is None:
            code = "invalid_request" if exc.status_code < 500 else "internal_error"
        return JSONResponse(
            {"error": message, "code": code}, status_code=exc.status_code, headers=headers or None
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response("internal_error", f"internal error: {type(exc).__name__}")
