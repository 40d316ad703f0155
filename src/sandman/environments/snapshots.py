"""Snapshots of a session's writable layer: the pure decisions.

When the admin enables them (``SANDMAN_SNAPSHOT_MAX_SIZE``), a session's own
changes outside ``/workspace`` (packages installed with ``pip --user`` into a
path outside the workspace, files under ``/tmp`` or ``/var/tmp``...) are
committed to a local image as the session ends, and a restored session starts
from that image. ``/workspace`` and the secret files are bind mounts, which a
commit never holds.

Here: the image names (one per user and session, which only that user's
restore may use), whether a layer may be kept (its size, with the snapshot it
was itself started from, against the limit), and which snapshots retention
lets go. The service around them (``services.snapshots``) does the I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sandman.sizes import format_size

# Labels on every snapshot image: only images carrying all of them are removed.
SNAPSHOT_LABEL = "sandman.snapshot"
# A snapshot of a session started from a snapshot stacks one more layer; overlay2
# refuses images deeper than 125 layers, so a chain stops well before that.
MAX_DEPTH = 32
REPOSITORY_SUFFIX = "-snapshots"
SESSION_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
USER_ID = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_RETENTION_PART = re.compile(r"^(\d+)([hdw])?$")
_UNIT = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def image_name(prefix: str, user_id: str, session_id: str) -> str:
    """``<prefix>-snapshots:<user>.<session>``: a user id never holds a dot, so the
    tag names its user and session unambiguously (and it is a valid tag: a word
    character first, at most 128 characters)."""
    return f"{prefix}{REPOSITORY_SUFFIX}:{user_id}.{session_id}"


def parse_image_name(prefix: str, image: str) -> tuple[str, str] | None:
    """(user, session) of a snapshot image name Sandman would make, else None."""
    repository, sep, tag = image.partition(":")
    if not sep or repository != f"{prefix}{REPOSITORY_SUFFIX}":
        return None
    user_id, dot, session_id = tag.partition(".")
    if not dot or not USER_ID.fullmatch(user_id) or not SESSION_ID.fullmatch(session_id):
        return None
    return user_id, session_id


def owned_by(prefix: str, image: str, user_id: str) -> bool:
    """The image policy for snapshots: a name Sandman makes, of this user."""
    parsed = parse_image_name(prefix, image)
    return parsed is not None and parsed[0] == user_id


def snapshot_labels(deployment: str, user_id: str, session_id: str) -> dict[str, str]:
    return {
        "sandman.managed": "true",
        "sandman.deployment": deployment,
        "sandman.user_id": user_id,
        "sandman.session_id": session_id,
        SNAPSHOT_LABEL: "true",
    }


def is_ours(labels: dict[str, str] | None, deployment: str, user_id: str) -> bool:
    """Whether an image's labels say this deployment made it as a snapshot of the user."""
    if not labels:
        return False
    wanted = {
        "sandman.managed": "true",
        "sandman.deployment": deployment,
        "sandman.user_id": user_id,
        SNAPSHOT_LABEL: "true",
    }
    return all(labels.get(k) == v for k, v in wanted.items())


@dataclass(frozen=True)
class SizeDecision:
    keep: bool
    size_bytes: int  # the whole chain's: this layer and the snapshot it started from
    reason: str | None = None  # why not, for the record and the restore notes


def decide_size(
    layer_bytes: int | None, parent_bytes: int, parent_depth: int, max_bytes: int
) -> SizeDecision:
    """Whether a writable layer of ``layer_bytes`` may be kept under ``max_bytes``.

    The limit holds for what a restore would bring back: the layer plus the
    snapshot the session was itself started from (``parent_bytes``), so restoring
    again and again cannot grow past it one layer at a time.
    """
    if layer_bytes is None:
        return SizeDecision(False, 0, "the runtime could not tell the container's size")
    total = layer_bytes + parent_bytes
    if total > max_bytes:
        shown = format_size(total)
        if parent_bytes:
            shown += f" with the snapshot it started from ({format_size(parent_bytes)})"
        return SizeDecision(
            False,
            total,
            f"its changes outside /workspace hold {shown}, over "
            f"SANDMAN_SNAPSHOT_MAX_SIZE ({format_size(max_bytes)})",
        )
    if parent_depth + 1 > MAX_DEPTH:
        return SizeDecision(
            False,
            total,
            f"it was started from a chain of {parent_depth} snapshots; a new one would "
            f"exceed {MAX_DEPTH} (start a session without restore to begin a new chain)",
        )
    return SizeDecision(True, total)


@dataclass(frozen=True)
class Retention:
    """How many snapshots each user keeps (newest first), and for how long."""

    keep: int | None = None
    max_age: timedelta | None = None


def parse_retention(text: str) -> Retention:
    """``3`` (the newest three per user), ``30d`` (for 30 days; ``h``, ``d``, ``w``),
    or both, comma-separated (``3,30d``: a snapshot goes when either says so)."""
    keep: int | None = None
    age: timedelta | None = None
    parts = [p.strip().lower() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ValueError("snapshot retention is empty: give a count (3), an age (30d) or both")
    for part in parts:
        match = _RETENTION_PART.fullmatch(part)
        if match is None:
            raise ValueError(
                f"snapshot retention {part!r} is neither a count (3) nor an age (30d, 12h, 2w)"
            )
        number, unit = int(match.group(1)), match.group(2)
        if unit is None:
            if keep is not None or number < 1:
                raise ValueError("snapshot retention takes one count, of at least 1")
            keep = number
        else:
            if age is not None or number < 1:
                raise ValueError("snapshot retention takes one age, of at least 1h")
            age = number * _UNIT[unit]
    return Retention(keep, age)


@dataclass(frozen=True)
class Kept:
    """One kept snapshot, as retention sees it."""

    session_id: str
    created_at: datetime


def to_prune(
    kept: Sequence[Kept], retention: Retention, now: datetime, in_use: frozenset[str] = frozenset()
) -> list[str]:
    """The session ids (of one user) whose snapshots retention lets go: beyond the
    newest ``keep``, or older than ``max_age``. Those in ``in_use`` (a session
    restored from them is still active) stay whatever the rules say."""
    ordered = sorted(kept, key=lambda k: (k.created_at, k.session_id), reverse=True)
    out = []
    for rank, snap in enumerate(ordered):
        over_count = retention.keep is not None and rank >= retention.keep
        too_old = retention.max_age is not None and now - snap.created_at > retention.max_age
        if (over_count or too_old) and snap.session_id not in in_use:
            out.append(snap.session_id)
    return out
