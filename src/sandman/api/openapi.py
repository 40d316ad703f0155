"""What the OpenAPI document says about errors: every route lists the statuses it
can answer, each with the one error schema, and validation failures are the 400
the server sends (FastAPI would document a 422 it never answers)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from sandman.errors import ERROR_CODES


class ErrorOut(BaseModel):
    """Every error answer."""

    error: str = Field(description="What went wrong and what to do, for a person.")
    code: str = Field(
        description="What went wrong, for a program; the status follows from it.",
        json_schema_extra={"enum": list(ERROR_CODES)},
    )
    eta: str | None = Field(
        None,
        description="`capacity_exhausted` on a session create: when the request would "
        "start had it asked to queue (ISO-8601 UTC), or null when nothing known to end "
        "would make room.",
    )


DESCRIPTIONS = {
    400: "The request is malformed or impossible (`invalid_request`); nothing changed.",
    401: "No or a wrong bearer token (`unauthenticated`).",
    403: "The caller may not do this (`forbidden`), or a quota does not allow it "
    "(`quota_exceeded`, naming the quota and the numbers), or a spent budget refuses "
    "new sessions (`budget_exhausted`).",
    404: "No such object or endpoint (`not_found`).",
    405: "The path exists but not with this method (`method_not_allowed`); see `Allow`.",
    409: "The request clashes with the current state (`conflict`).",
    500: "Sandman failed (`internal_error`); the server log has the details.",
    503: "No capacity now (`capacity_exhausted`, with `eta` on a session create), the "
    "container engine does not answer (`engine_unavailable`), or every worker is busy "
    "(`busy`); `Retry-After` says when to retry where a retry can help.",
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Whole seconds to wait before retrying, when a retry can help.",
        "schema": {"type": "integer"},
    }
}
ALLOW = {"Allow": {"description": "The methods the path accepts.", "schema": {"type": "string"}}}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route or router: these error statuses with ``ErrorOut``."""
    found: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorOut, "description": DESCRIPTIONS[status]}
        if status == 503:
            entry["headers"] = RETRY_AFTER
        if status == 405:
            entry["headers"] = ALLOW
        found[status] = entry
    return found


GPU_FIELDS = ("mig_profile", "mig_instance_uuid", "gpu_count", "gpu_memory_gb")


def at_most_one_set(fields: tuple[str, ...], flags: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """JSON Schema alternatives of which any matches when two of ``fields`` are set
    (present and not null), or one of them and a flag of ``flags`` (true): wrapped in
    ``not``, at most one of them is set."""
    set_ = {"not": {"type": "null"}}
    on = {"const": True}
    return [
        {"required": [a, b], "properties": {a: set_, b: set_}}
        for i, a in enumerate(fields)
        for b in fields[i + 1 :]
    ] + [{"required": [a, f], "properties": {a: set_, f: on}} for f in flags for a in fields]


Limits = dict[tuple[str, str], dict[str, Any]]  # (schema, property) -> JSON Schema keywords


def install_openapi(app: FastAPI, limits: Limits) -> None:
    """Replace FastAPI's 422 (never answered) by the 400 the server sends, and state the
    limits that come from this server's settings and hardware (``limits``)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        error_ref = {"$ref": "#/components/schemas/ErrorOut"}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None and "400" not in responses:
                    responses["400"] = {
                        "description": DESCRIPTIONS[400],
                        "content": {"application/json": {"schema": error_ref}},
                    }
        components = schema.get("components", {}).get("schemas", {})
        create = components.get("CreateSessionBody")
        if create is not None:
            create["not"] = {
                "anyOf": [
                    *at_most_one_set(GPU_FIELDS, ("shared",)),
                    *at_most_one_set(("image", "environment")),
                ]
            }
        for (name, field), keywords in limits.items():
            prop = components.get(name, {}).get("properties", {}).get(field)
            for option in prop.get("anyOf", [prop]) if prop is not None else []:
                if option.get("type") != "null":
                    option.update(keywords)
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
