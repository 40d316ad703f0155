"""Domain errors.

Services raise these; the API turns them into ``{"error": message, "code": code}``
responses in exactly one place (``sandman.api.errors``). Each class carries its
machine code and the HTTP status it maps to, so the mapping lives beside the
meaning; ``ERROR_CODES`` is the whole table, documented in the README and in
OpenAPI.
"""

from __future__ import annotations

# Every code an error body can carry, with its HTTP status.
ERROR_CODES: dict[str, int] = {
    "invalid_request": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "quota_exceeded": 403,
    "budget_exhausted": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "capacity_exhausted": 503,
    "engine_unavailable": 503,
    "busy": 503,
    "internal_error": 500,
}


class SandmanError(Exception):
    """Base of every error Sandman explains to a caller."""

    code = "internal_error"
    retry_after: float | None = None  # seconds, where a retry can help
    details: dict[str, object] | None = None  # more fields of the error body (``eta``)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def status_code(self) -> int:
        return ERROR_CODES[self.code]


class InvalidRequest(SandmanError):
    """The caller asked for something malformed or impossible (400)."""

    code = "invalid_request"


class Unauthorized(SandmanError):
    """Missing or wrong credentials (401)."""

    code = "unauthenticated"


class Forbidden(SandmanError):
    """The caller is known but may not do this (403)."""

    code = "forbidden"


class QuotaExceeded(Forbidden):
    """A user's, team's or project's quota does not allow this (403); the message
    names the quota and the numbers."""

    code = "quota_exceeded"

    def __init__(self, message: str, waitable: bool = False) -> None:
        super().__init__(message)
        # Every quota broken would allow it once the same user's or team's own
        # sessions end: a request that asked to queue waits instead.
        self.waitable = waitable


class BudgetExhausted(QuotaExceeded):
    """The team's or project's budget for the month is spent and its action refuses
    new sessions (403); the message names the budget and the numbers."""

    code = "budget_exhausted"


class NotFound(SandmanError):
    """The named object does not exist (404)."""

    code = "not_found"


class Conflict(SandmanError):
    """The request clashes with the current state (409)."""

    code = "conflict"


class SessionConflict(Conflict):
    """The user already has an active session."""


class CapacityExhausted(SandmanError):
    """No free GPU resource, port or similar matches the request (503)."""

    code = "capacity_exhausted"


class Busy(SandmanError):
    """Sandman is at its limit for this kind of work right now; retry later (503)."""

    code = "busy"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RuntimeUnavailable(SandmanError):
    """The container engine does not answer (503); it often comes back, so retry."""

    code = "engine_unavailable"
    retry_after = 5.0


class RuntimeFailure(SandmanError):
    """The container engine answered but the operation failed (500)."""


class GpuError(SandmanError):
    """A GPU inventory operation failed (NVML error, invalid placement...) (500)."""


class InvalidLayout(InvalidRequest):
    """A set of MIG instances cannot coexist on a GPU (400)."""


class UnknownGpuModel(InvalidRequest):
    """A model name matches nothing in the catalogue."""


class ConfigurationError(SandmanError):
    """Settings that cannot work; raised at start-up with the reason."""
