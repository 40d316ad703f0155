"""Snapshots of sessions' writable layers: taken as a session ends, used by a restore.

When ``SANDMAN_SNAPSHOT_MAX_SIZE`` is set, a stop hook (before the container
goes) measures the container's own changes, commits them to a local image
named for the user and session when they fit (``environments.snapshots``
decides) and records the outcome either way; once the session has ended,
retention removes older snapshots of the user (only images carrying this
deployment's snapshot labels, never one a container still uses). A
restore of that session starts from the image; the restore notes say whether
it did, or why not.

Deleting a user or uninstalling leaves the images and their records: they are
removed only by retention, or by an admin (``docker image rm``, selecting them
by the ``sandman.snapshot`` and ``sandman.user_id`` labels).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session as Db

from sandman.domain import CURRENT_STATUSES
from sandman.environments.snapshots import (
    Kept,
    Retention,
    decide_size,
    image_name,
    is_ours,
    owned_by,
    parse_image_name,
    snapshot_labels,
    to_prune,
)
from sandman.errors import SandmanError
from sandman.runtime.base import SessionRuntime, Snapshotting
from sandman.services.requests import SessionRequest
from sandman.store.database import Database
from sandman.store.models import Session as SessionRow
from sandman.store.models import SessionSnapshotRow, utcnow

log = logging.getLogger(__name__)

KEPT, SKIPPED, FAILED, PRUNED = "kept", "skipped", "failed", "pruned"
NO_SNAPSHOTS = "this runtime keeps no snapshots of a container's writable layer"
CURRENT = [s.value for s in CURRENT_STATUSES]


class Snapshots:
    def __init__(
        self,
        db: Database,
        runtime: SessionRuntime,
        prefix: str,
        deployment: str,
        max_bytes: int | None,
        retention: Retention,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        # None: the runtime keeps no snapshots (it lacks the optional methods).
        self.runtime: Snapshotting | None = runtime if isinstance(runtime, Snapshotting) else None
        self.prefix = prefix
        self.deployment = deployment
        self.max_bytes = max_bytes
        self.retention = retention
        self.clock = clock

    @property
    def enabled(self) -> bool:
        return bool(self.max_bytes)

    def record(self, session_id: str) -> SessionSnapshotRow | None:
        with self.db.read() as db:
            return db.get(SessionSnapshotRow, session_id)

    # ------------------------------------------------------------------ taking
    def on_stop(self, _user_id: str, session_id: str, _reason: str) -> None:
        """A stop hook: snapshot the container before it goes (when enabled)."""
        if not self.enabled:
            return
        with self.db.read() as db:
            row = db.get(SessionRow, session_id)
        if row is None or row.started_at is None or row.container_id is None:
            return
        try:
            self.take(row)
        except SandmanError as exc:
            log.warning("no snapshot of session %s: %s", session_id, exc.message)
            self._write(row, FAILED, reason=f"the runtime failed: {exc.message}")

    def _parent(self, row: SessionRow) -> SessionSnapshotRow | None:
        parsed = parse_image_name(self.prefix, row.image)
        return self.record(parsed[1]) if parsed is not None else None

    def take(self, row: SessionRow) -> SessionSnapshotRow:
        """Measure, decide, commit, record, prune; returns the record."""
        assert self.max_bytes and row.container_id is not None
        if self.runtime is None:
            return self._write(row, SKIPPED, reason=NO_SNAPSHOTS, base_image=row.image)
        parent = self._parent(row)
        base = parent.base_image if parent is not None and parent.base_image else row.image
        layer = self.runtime.layer_size(row.container_id)
        decision = decide_size(
            layer,
            (parent.size_bytes or 0) if parent is not None else 0,
            parent.depth if parent is not None else 0,
            self.max_bytes,
        )
        depth = (parent.depth if parent is not None else 0) + 1
        facts = {"base_image": base, "layer_bytes": layer, "size_bytes": decision.size_bytes}
        if not decision.keep:
            log.info("no snapshot of session %s: %s", row.id, decision.reason)
            return self._write(row, SKIPPED, reason=decision.reason, depth=depth, **facts)
        image = image_name(self.prefix, row.user_id, row.id)
        labels = snapshot_labels(self.deployment, row.user_id, row.id)
        image_id = self.runtime.commit_snapshot(row.container_id, image, labels)
        if image_id is None:
            return self._write(row, SKIPPED, reason=NO_SNAPSHOTS, **facts)
        kept = self._write(row, KEPT, image=image, image_id=image_id, depth=depth, **facts)
        log.info("snapshot %s of session %s kept (%s bytes)", image, row.id, layer)
        return kept

    def on_end(self, user_id: str, _session_id: str, _reason: str) -> None:
        """An end hook: retention, once the container is gone (an engine refuses to
        remove an image a container, even a stopped one, was made from)."""
        if not self.enabled:
            return
        try:
            self.prune(user_id)
        except SandmanError as exc:
            log.warning("snapshots of %s not pruned: %s", user_id, exc.message)

    def _write(self, row: SessionRow, status: str, **values: object) -> SessionSnapshotRow:
        with self.db.transaction() as db:
            kept = db.get(SessionSnapshotRow, row.id)
            if kept is None:
                kept = SessionSnapshotRow(session_id=row.id, user_id=row.user_id)
                db.add(kept)
            kept.status, kept.created_at, kept.pruned_at = status, self.clock(), None
            for name in ("reason", "image", "image_id", "base_image", "layer_bytes", "size_bytes"):
                setattr(kept, name, values.get(name))
            kept.depth = int(values.get("depth") or 0)  # type: ignore[call-overload]
        return kept

    def prune(self, user_id: str) -> list[str]:
        """Remove the user's snapshots retention lets go (only images carrying this
        deployment's snapshot labels; one still used by a container stays); returns
        the images removed."""
        with self.db.read() as db:
            kept = list(
                db.scalars(
                    select(SessionSnapshotRow).where(
                        SessionSnapshotRow.user_id == user_id, SessionSnapshotRow.status == KEPT
                    )
                )
            )
            in_use = set(
                db.scalars(
                    select(SessionRow.image).where(
                        SessionRow.user_id == user_id, SessionRow.status.in_(CURRENT)
                    )
                )
            )
        if self.runtime is None:
            return []
        by_id = {k.session_id: k for k in kept}
        busy = frozenset(k.session_id for k in kept if k.image in in_use)
        chosen = to_prune([Kept(k.session_id, k.created_at) for k in kept], self.retention,
                          self.clock(), busy)  # fmt: skip
        removed = []
        for session_id in chosen:
            snap = by_id[session_id]
            assert snap.image is not None
            labels = self.runtime.snapshot_labels(snap.image)
            if labels is not None and not is_ours(labels, self.deployment, user_id):
                log.warning("image %s is not a snapshot Sandman made; left alone", snap.image)
            elif labels is not None and not self.runtime.remove_snapshot(snap.image):
                continue  # in use: tried again at the next prune
            else:
                removed.append(snap.image)
            with self.db.transaction() as db:
                row = db.get(SessionSnapshotRow, session_id)
                if row is not None:
                    row.status, row.pruned_at = PRUNED, self.clock()
                    row.reason = "removed by SANDMAN_SNAPSHOT_RETENTION"
        return removed

    # ----------------------------------------------------------------- restore
    def base_of(self, db: Db, image: str) -> str | None:
        """The image a snapshot image was made from (in the caller's transaction);
        None for an image that is no snapshot of this deployment's."""
        parsed = parse_image_name(self.prefix, image)
        snap = db.get(SessionSnapshotRow, parsed[1]) if parsed is not None else None
        return snap.base_image if snap is not None and snap.image == image else None

    def allow(self, user_id: str, image: str, base_image: str) -> bool:
        """The image policy for a restore: the user's own kept snapshot, made from the
        image the restored session would otherwise start from, present with our labels."""
        parsed = parse_image_name(self.prefix, image)
        if self.runtime is None or parsed is None or not owned_by(self.prefix, image, user_id):
            return False
        snap = self.record(parsed[1])
        return (
            snap is not None
            and snap.status == KEPT
            and snap.user_id == user_id
            and snap.image == image
            and snap.base_image == base_image
            and is_ours(self.runtime.snapshot_labels(image), self.deployment, user_id)
        )

    def restore(
        self, request: SessionRequest, source: SessionRow, named_image: bool
    ) -> tuple[SessionRequest, str | None]:
        """``request`` (already ``restored_request``) starting from the source's
        snapshot when there is a usable one, with a note saying whether it does."""
        parent = self._parent(source)
        if request.image is not None and parse_image_name(self.prefix, request.image):
            # The source itself started from a snapshot: its image is that snapshot's base.
            base = parent.base_image if parent is not None else None
            request = replace(request, image=base)
        snap = self.record(source.id)
        if snap is None:
            if not self.enabled:
                return request, None
            return request, f"no snapshot of session {source.id} was taken"
        if snap.status != KEPT or snap.image is None:
            why = snap.reason or snap.status
            return request, f"the snapshot of session {source.id} was not used: {why}"
        if named_image:
            return request, (
                f"the snapshot of session {source.id} was not used: the request names "
                "its own image or environment"
            )
        base = snap.base_image or ""
        if not self.allow(source.user_id, snap.image, base):
            return request, (
                f"the snapshot of session {source.id} was not used: image {snap.image} "
                "is gone or is not a snapshot Sandman made"
            )
        return (
            replace(request, snapshot_image=snap.image),
            f"started from the snapshot of session {source.id} ({snap.image}): its "
            "changes outside /workspace are back",
        )
