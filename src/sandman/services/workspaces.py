"""Workspace quotas: what each user's workspace may hold (their own quota, else
``SANDMAN_WORKSPACE_QUOTA``), what it holds, and changes to either.

The runtime stores and enforces them (a sparse image per user on Docker, the
claim's size on Kubernetes); this service says when they may change: a quota
never drops below what the workspace holds, a change that needs the workspace
out of use waits for the user's session to end, and so does a migration.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session as Db

from sandman.config import Settings
from sandman.domain import checked_workspace_quota, validate_user_id
from sandman.errors import Conflict, NotFound, SandmanError
from sandman.runtime.base import SessionRuntime, WorkspaceUsage
from sandman.services.session_reads import ACTIVE
from sandman.sizes import format_size
from sandman.store.database import Database
from sandman.store.models import Session as SessionRow
from sandman.store.models import User, WorkspaceQuota, utcnow

log = logging.getLogger(__name__)

EnsureUser = Callable[[Db, str], User]  # the user's row, made (with a uid) when missing


def configured_quota(db: Db, user_id: str, default: int | None) -> int | None:
    """What the user's workspace may hold: their own quota, else the default; None when
    quotas are off (``default`` None), whatever anyone's own."""
    if default is None:
        return None
    row = db.get(WorkspaceQuota, user_id)
    return row.quota_bytes if row is not None else default


@dataclass(frozen=True)
class WorkspaceView:
    """A user's workspace as the API shows it."""

    user_id: str
    quota_bytes: int | None  # enforced now where ``storage`` enforces; else what will be
    used_bytes: int | None  # None when not measured
    storage: str | None  # None: no workspace yet
    own_quota: bool  # the user's own quota, not the default

    def summary(self) -> dict[str, Any]:
        return {"quota_bytes": self.quota_bytes, "used_bytes": self.used_bytes}


def view(
    user_id: str, configured: int | None, own: bool, usage: WorkspaceUsage | None
) -> WorkspaceView:
    """The limit that holds: an enforcing storage's own, else the configured one."""
    quota = usage.quota_bytes if usage is not None and usage.enforced else configured
    return WorkspaceView(
        user_id,
        quota,
        usage.used_bytes if usage is not None else None,
        usage.storage if usage is not None else None,
        own,
    )


class WorkspaceService:
    def __init__(
        self, settings: Settings, db: Database, runtime: SessionRuntime, ensure_user: EnsureUser
    ) -> None:
        self.settings = settings
        self.db = db
        self.runtime = runtime
        self.ensure_user = ensure_user
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _lock(self, user_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(user_id, threading.Lock())

    # ------------------------------------------------------------------ reads
    def get(self, user_id: str) -> WorkspaceView:
        validate_user_id(user_id)
        with self.db.read() as db:
            if db.get(User, user_id) is None:
                raise NotFound(f"no user {user_id!r}")
            own = db.get(WorkspaceQuota, user_id)
            default = self.settings.workspace_quota
            configured = None if default is None else (own.quota_bytes if own else default)
        return view(user_id, configured, own is not None, self.runtime.workspace_usage(user_id))

    def summaries(self, user_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """``{quota_bytes, used_bytes}`` per user, for sessions' answers (one query)."""
        wanted = set(user_ids)
        default = self.settings.workspace_quota
        own: dict[str, int] = {}
        if wanted and default is not None:
            with self.db.read() as db:
                rows = db.scalars(select(WorkspaceQuota).where(WorkspaceQuota.user_id.in_(wanted)))
                own = {row.user_id: row.quota_bytes for row in rows}
        found = {}
        for user_id in wanted:
            configured = own.get(user_id, default)
            try:
                usage = self.runtime.workspace_usage(user_id)
            except (SandmanError, OSError) as exc:  # an answer about sessions still comes
                log.warning("usage of the workspace of %s: %s", user_id, exc)
                usage = None
            found[user_id] = view(user_id, configured, user_id in own, usage).summary()
        return found

    def live_session(self, user_id: str) -> SessionRow | None:
        with self.db.read() as db:
            return db.scalars(
                select(SessionRow).where(
                    SessionRow.user_id == user_id, SessionRow.status.in_(ACTIVE)
                )
            ).first()

    # ---------------------------------------------------------------- changes
    def set_quota(self, user_id: str, quota_bytes: int) -> WorkspaceView:
        """The user's own quota, applied at once to a workspace that enforces one (grown
        online; shrunk only while no session runs, and never below what it holds)."""
        validate_user_id(user_id)
        checked_workspace_quota(quota_bytes)
        if self.settings.workspace_quota is None:
            raise Conflict("workspace quotas are off on this server (SANDMAN_WORKSPACE_QUOTA=none)")
        with self._lock(user_id):
            with self.db.transaction() as db:
                self.ensure_user(db, user_id)
            usage = self.runtime.workspace_usage(user_id)
            if usage is not None and usage.enforced:
                live = self.live_session(user_id) is not None
                self.runtime.resize_workspace(user_id, quota_bytes, live)
            with self.db.transaction() as db:
                row = db.get(WorkspaceQuota, user_id)
                if row is None:
                    db.add(WorkspaceQuota(user_id=user_id, quota_bytes=quota_bytes))
                else:
                    row.quota_bytes = quota_bytes
                    row.updated_at = utcnow()
        log.info("workspace quota of %s: %s", user_id, format_size(quota_bytes))
        return self.get(user_id)

    def migrate(self, user_id: str) -> str | None:
        """Move a workspace without a quota into storage that enforces one; refused
        while the user has a session. None when there is nothing to move."""
        validate_user_id(user_id)
        with self.db.read() as db:
            quota = configured_quota(db, user_id, self.settings.workspace_quota)
        if quota is None:
            raise Conflict("workspace quotas are off (SANDMAN_WORKSPACE_QUOTA=none)")
        session = self.live_session(user_id)
        if session is not None:
            raise Conflict(
                f"{user_id} has a session ({session.id}, {session.status}); "
                "end it before migrating the workspace"
            )
        return self.runtime.migrate_workspace(user_id, quota)

    def release(self, user_id: str) -> bool:
        """Take a workspace out of use on this host; refused while a session uses it."""
        validate_user_id(user_id)
        session = self.live_session(user_id)
        if session is not None:
            raise Conflict(f"{user_id} has a session ({session.id}); end it first")
        return self.runtime.release_workspace(user_id)

    def users(self) -> list[str]:
        with self.db.read() as db:
            return sorted(db.scalars(select(User.user_id)))

    def restore(self) -> None:
        """At start-up: every workspace with a quota mounted again; warnings logged."""
        quota = self.settings.workspace_quota
        log.info(
            "workspace quotas: %s",
            f"{format_size(quota)} each unless a user has their own" if quota else "off",
        )
        for warning in self.runtime.restore_workspaces():
            log.warning("%s", warning)
