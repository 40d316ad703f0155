"""``Accounts``: the one object the API and the CLI use for users, teams, projects,
credentials and the audit trail."""

from __future__ import annotations

from datetime import timedelta

from sandman.accounts.audit import AuditLog
from sandman.accounts.directory import Directory
from sandman.accounts.policy import Action, Caller, decide
from sandman.accounts.teams import Charge, Teams
from sandman.accounts.tokens import Credentials
from sandman.domain import SessionStatus
from sandman.errors import InvalidRequest, NotFound
from sandman.services.sessions import SessionService
from sandman.store.database import Database
from sandman.store.models import User, utcnow


class Accounts:
    def __init__(self, db: Database, sessions: SessionService, login_ttl: timedelta) -> None:
        self.db = db
        self.directory = Directory(
            db,
            sessions.ensure_user,
            lambda session_id, reason: sessions.end(
                session_id, SessionStatus.DELETED, reason, wait=True
            ),
        )
        self.teams = Teams(db)
        self.credentials = Credentials(db, self.directory, login_ttl)
        self.audit = AuditLog(db)
        self.bootstrap_since = utcnow()

    def session_owner(self, caller: Caller, user_id: str | None) -> str:
        """Whose session a create is for: ``user_id``, or the caller when it is omitted."""
        owner = user_id or caller.user_id
        if owner is None:
            raise InvalidRequest(
                "user_id is required with the admin token, which belongs to no user"
            )
        return owner

    def prepare_session(
        self, caller: Caller, user_id: str, team: str | None, project: str | None
    ) -> Charge:
        """Make sure the owner exists (an admin or operator may start a session for a
        user Sandman does not know yet: they get role ``user``) and is active, and
        find what the session is charged to."""
        with self.db.transaction() as db:
            exists = db.get(User, user_id) is not None
            if not exists and not decide(caller, Action.USER_CREATE).allowed:
                raise NotFound(f"no user {user_id!r}")
            self.directory.ensure(db, user_id)
        return self.teams.charge(caller, user_id, team, project)
