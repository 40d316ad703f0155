"""Words of the domain, with no I/O: session states, user names, requests."""

from __future__ import annotations

import re
from enum import StrEnum

from sandman.errors import InvalidRequest
from sandman.image.accounts import reserved_names

USER_ID_PATTERN = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # teams and projects


class SessionStatus(StrEnum):
    """Where a session is in its life.

    ``starting``/``running``/``stopping`` are active: they hold resources.
    ``queued`` waits for room and holds nothing; it counts as the user's one
    session all the same. ``expired`` (TTL), ``deleted`` (DELETE), ``failed``
    (creation failed), ``lost`` (the container vanished or died), ``idle``
    (reclaimed after its idle timeout), ``cancelled`` (a queued request withdrawn
    or timed out) and ``preempted`` (ended for a request of higher claim) are
    ended: they hold nothing.
    """

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    EXPIRED = "expired"
    DELETED = "deleted"
    FAILED = "failed"
    LOST = "lost"
    IDLE = "idle"
    QUEUED = "queued"
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"

    @property
    def active(self) -> bool:
        return self in ACTIVE_STATUSES

    @property
    def ended(self) -> bool:
        return self not in ACTIVE_STATUSES and self is not SessionStatus.QUEUED


ACTIVE_STATUSES = frozenset({SessionStatus.STARTING, SessionStatus.RUNNING, SessionStatus.STOPPING})
# What counts as a user's one session: the active ones and a queued request.
CURRENT_STATUSES = ACTIVE_STATUSES | {SessionStatus.QUEUED}


def validate_user_id(user_id: str) -> str:
    """Linux user-name rules; checked before a name touches a path or a container."""
    if not isinstance(user_id, str) or not USER_ID_PATTERN.fullmatch(user_id):
        raise InvalidRequest(
            f"invalid user_id {user_id!r}: use 1-32 characters, lower-case letters, digits, "
            "'_' or '-', starting with a letter or '_'"
        )
    if user_id in RESERVED_USER_IDS:
        raise InvalidRequest(f"user_id {user_id!r} is reserved for the system")
    return user_id


RESERVED_USER_IDS = reserved_names() | {"messagebus", "systemd-network", "systemd-resolve"}


MIN_WORKSPACE_QUOTA = 64 * 2**20  # room for a file system's own tables, and some files
MAX_WORKSPACE_QUOTA = 16 * 2**40  # the largest file ext4 keeps (a workspace image is one)


def checked_workspace_quota(quota_bytes: int) -> int:
    """A quota a workspace can have, or ``InvalidRequest`` saying which can."""
    from sandman.sizes import format_size

    if not MIN_WORKSPACE_QUOTA <= quota_bytes <= MAX_WORKSPACE_QUOTA:
        raise InvalidRequest(
            f"a workspace quota must be between {format_size(MIN_WORKSPACE_QUOTA)} "
            f"({MIN_WORKSPACE_QUOTA} bytes) and {format_size(MAX_WORKSPACE_QUOTA)} "
            f"({MAX_WORKSPACE_QUOTA} bytes), not {quota_bytes}"
        )
    return quota_bytes


def validate_name(name: str, what: str) -> str:
    """A team's or project's name: 1-64 letters, digits, '_', '.' or '-'."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidRequest(
            f"invalid {what} name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name
