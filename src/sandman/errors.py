"""Domain errors.

Services raise these; the API turns them into ``{"error": message}`` responses in
exactly one place (``sandman.api.errors``). Each class carries the HTTP status it
maps to so that the mapping lives beside the meaning.
"""

from __future__ import annotations


class SandmanError(Exception):
    """Base of every error Sandman explains to a caller."""

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(SandmanError):
    """The caller asked for something malformed or impossible (400)."""

    status_code = 400


class Unauthorized(SandmanError):
    """Missing or wrong credentials (401)."""

    status_code = 401


class NotFound(SandmanError):
    """The named object does not exist (404)."""

    status_code = 404


class Conflict(SandmanError):
    """The request clashes with the current state (409)."""

    status_code = 409


class SessionConflict(Conflict):
    """The user already has an active session."""


class CapacityExhausted(SandmanError):
    """No free GPU resource, port or similar matches the request (503)."""

    status_code = 503


class Busy(SandmanError):
    """Sandman is at its limit for this kind of work right now; retry later (503)."""

    status_code = 503

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RuntimeUnavailable(SandmanError):
    """The container engine does not answer (503)."""

    status_code = 503


class RuntimeFailure(SandmanError):
    """The container engine answered but the operation failed (500)."""

    status_code = 500


class GpuError(SandmanError):
    """A GPU inventory operation failed (NVML error, invalid placement...)."""

    status_code = 500


class InvalidLayout(InvalidRequest):
    """A set of MIG instances cannot coexist on a GPU (400)."""


class UnknownGpuModel(InvalidRequest):
    """A model name matches nothing in the catalogue."""


class ConfigurationError(SandmanError):
    """Settings that cannot work; raised at start-up with the reason."""
