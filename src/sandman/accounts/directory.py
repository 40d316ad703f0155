"""Users: created by an admin, imported from a file, or at their first single
sign-on; disabled, never deleted (their uid owns their files)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session as Db

from sandman.accounts import epoch
from sandman.accounts.policy import Caller, Role, Scope
from sandman.domain import SessionStatus, validate_name, validate_user_id
from sandman.errors import Conflict, InvalidRequest, NotFound
from sandman.store.database import Database
from sandman.store.models import ApiToken, Team, TeamMember, User, WebLogin, utcnow
from sandman.store.models import Session as SessionRow

ACTIVE = [s.value for s in SessionStatus if not s.ended]  # queued requests too
SEEN_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often
MEMBERSHIP_ROLES = ("member", "lead")
# One '@', no blanks or control characters on either side; the provider checks the rest.
EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+$"


@dataclass(frozen=True)
class UserChanges:
    """Fields a PATCH or an import may set; None leaves a field as it is."""

    display_name: str | None = None
    email: str | None = None
    role: Role | None = None
    status: str | None = None
    default_team: str | None = None
    default_project: str | None = None


@dataclass(frozen=True)
class UserView:
    user_id: str
    uid: int
    display_name: str | None
    email: str | None
    role: str
    status: str
    created_at: datetime
    last_seen_at: datetime | None
    teams: dict[str, str]
    default_team: str | None
    default_project: str | None
    sso: bool
    extra: dict[str, Any] = field(default_factory=dict)


def check_email(email: str | None) -> str | None:
    if email is None:
        return None
    if len(email) > 254 or not re.fullmatch(EMAIL_PATTERN, email):
        raise InvalidRequest(f"invalid email {email!r}")
    return email


def memberships(db: Db, user_id: str) -> dict[str, str]:
    rows = db.execute(select(TeamMember.team, TeamMember.role).where(TeamMember.user_id == user_id))
    return {team: role for team, role in rows}


def view(db: Db, user: User, teams: dict[str, str] | None = None) -> UserView:
    """The user as callers see it; ``teams``: their memberships, when already read."""
    return UserView(
        user_id=user.user_id,
        uid=user.uid,
        display_name=user.display_name,
        email=user.email,
        role=user.role,
        status=user.status,
        created_at=user.created_at,
        last_seen_at=user.last_seen_at,
        teams=memberships(db, user.user_id) if teams is None else teams,
        default_team=user.default_team,
        default_project=user.default_project,
        sso=user.oidc_subject is not None,
    )


class Directory:
    """Users and what follows from them: their caller identity, disabling them."""

    def __init__(
        self,
        db: Database,
        ensure_user: Callable[[Db, str], User],
        end_session: Callable[[str, str], object],
    ) -> None:
        self.db = db
        self._ensure_user = ensure_user  # allocates the uid (SessionService.ensure_user)
        self._end_session = end_session  # (session id, reason)

    # -- reads ---------------------------------------------------------------------
    def get(self, user_id: str) -> UserView:
        with self.db.read() as db:
            return view(db, self._existing(db, user_id))

    def ssh_keys(self, user_id: str) -> list[str]:
        """The user's SSH public keys (they open the gateway to every later session)."""
        with self.db.read() as db:
            return list(self._existing(db, user_id).ssh_public_keys or [])

    def set_ssh_keys(self, user_id: str, keys: list[str]) -> list[str]:
        """Replace the user's keys with ``keys``, already normalized by the caller."""
        with self.db.transaction() as db:
            user = self._existing(db, user_id)
            user.ssh_public_keys = list(keys)
            return list(keys)

    def list_users(self, status: str | None = None) -> list[UserView]:
        query = select(User).order_by(User.user_id)
        if status is not None:
            if status not in ("active", "disabled"):
                raise InvalidRequest(f"unknown status {status!r}: use active or disabled")
            query = query.where(User.status == status)
        with self.db.read() as db:
            teams: dict[str, dict[str, str]] = {}
            for user_id, team, role in db.execute(
                select(TeamMember.user_id, TeamMember.team, TeamMember.role)
            ):
                teams.setdefault(user_id, {})[team] = role
            return [view(db, user, teams.get(user.user_id, {})) for user in db.scalars(query)]

    def role_of(self, user_id: str) -> Role | None:
        with self.db.read() as db:
            user = db.get(User, validate_user_id(user_id))
            return Role(user.role) if user is not None else None

    def caller(
        self,
        db: Db,
        user: User,
        scopes: frozenset[Scope] = frozenset(Scope),
        via: str = "token",
        token_name: str | None = None,
    ) -> Caller:
        return Caller(
            user_id=user.user_id,
            role=Role(user.role),
            scopes=scopes,
            teams=memberships(db, user.user_id),
            via=via,
            token_name=token_name,
        )

    # -- changes -------------------------------------------------------------------
    def create(self, user_id: str, changes: UserChanges) -> UserView:
        validate_user_id(user_id)
        with self.db.transaction() as db:
            if db.get(User, user_id) is not None:
                raise Conflict(f"user {user_id} exists; change it with PATCH")
            user = self._ensure_user(db, user_id)
            self._join_defaults(db, user_id, changes)
            self._apply(db, user, changes)
            return view(db, user)

    def _join_defaults(self, db: Db, user_id: str, changes: UserChanges) -> None:
        """A new user named with a default team or project joins that team."""
        from sandman.store.models import Project

        teams = []
        if changes.default_team is not None:
            teams.append(validate_name(changes.default_team, "team"))
        if changes.default_project is not None:
            project = db.get(Project, validate_name(changes.default_project, "project"))
            if project is None:
                raise NotFound(f"no project {changes.default_project!r}")
            teams.append(project.team)
        for team in teams:
            if db.get(Team, team) is None:
                raise NotFound(f"no team {team!r}")
            if db.get(TeamMember, (team, user_id)) is None:
                db.add(TeamMember(team=team, user_id=user_id, role="member"))
                db.flush()

    def ensure(self, db: Db, user_id: str) -> User:
        """The user, created with role ``user`` if Sandman does not know them yet (an
        admin starting a session for a new user); a disabled user is refused."""
        user = self._ensure_user(db, validate_user_id(user_id))
        if user.status != "active":
            raise Conflict(f"user {user_id} is disabled; enable them first")
        return user

    def update(self, user_id: str, changes: UserChanges) -> UserView:
        with self.db.transaction() as db:
            user = self._existing(db, user_id)
            was = user.status
            self._apply(db, user, changes)
            epoch.bump(db)
            disabled = was == "active" and user.status == "disabled"
            if disabled:
                self._revoke(db, user_id)
        if disabled:
            self._end_sessions(user_id, "the account was disabled")
        return self.get(user_id)

    def disable(self, user_id: str) -> UserView:
        """Disable: end their sessions, revoke tokens and logins; keep uid and workspace."""
        return self.update(user_id, UserChanges(status="disabled"))

    def _apply(self, db: Db, user: User, changes: UserChanges) -> None:
        if changes.display_name is not None:
            if len(changes.display_name) > 128:
                raise InvalidRequest("display_name is longer than 128 characters")
            user.display_name = changes.display_name
        if changes.email is not None:
            user.email = check_email(changes.email) or None
        if changes.role is not None:
            user.role = Role(changes.role).value
        if changes.status is not None:
            if changes.status not in ("active", "disabled"):
                raise InvalidRequest("status must be active or disabled")
            user.status = changes.status
        if changes.default_team is not None:
            team = validate_name(changes.default_team, "team")
            if db.get(Team, team) is None:
                raise NotFound(f"no team {team!r}")
            if db.get(TeamMember, (team, user.user_id)) is None:
                raise InvalidRequest(f"{user.user_id} is not a member of team {team}")
            user.default_team = team
        if changes.default_project is not None:
            from sandman.store.models import Project

            project = db.get(Project, validate_name(changes.default_project, "project"))
            if project is None:
                raise NotFound(f"no project {changes.default_project!r}")
            if db.get(TeamMember, (project.team, user.user_id)) is None:
                raise InvalidRequest(
                    f"{user.user_id} is not a member of team {project.team}, "
                    f"which project {project.name} belongs to"
                )
            user.default_project = project.name

    def _revoke(self, db: Db, user_id: str) -> None:
        now = utcnow()
        db.execute(
            update(ApiToken)
            .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        db.execute(delete(WebLogin).where(WebLogin.user_id == user_id))

    def _end_sessions(self, user_id: str, reason: str) -> None:
        with self.db.read() as db:
            ids = list(
                db.scalars(
                    select(SessionRow.id).where(
                        SessionRow.user_id == user_id, SessionRow.status.in_(ACTIVE)
                    )
                )
            )
        for session_id in ids:
            self._end_session(session_id, reason)

    def _existing(self, db: Db, user_id: str) -> User:
        user = db.get(User, validate_user_id(user_id))
        if user is None:
            raise NotFound(f"no user {user_id!r}")
        return user

    # -- import --------------------------------------------------------------------
    def import_users(self, entries: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
        """Create or update users from a file's entries; re-running changes nothing."""
        from sandman.accounts.teams import ensure_team

        result: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": []}
        for entry in entries:
            user_id = validate_user_id(str(entry.get("user_id", "")))
            unknown = set(entry) - {
                "user_id",
                "display_name",
                "email",
                "role",
                "teams",
                "default_team",
                "default_project",
            }
            if unknown:
                raise InvalidRequest(f"{user_id}: unknown fields {', '.join(sorted(unknown))}")
            teams = parse_teams(entry.get("teams"))
            with self.db.transaction() as db:
                user = db.get(User, user_id)
                created = user is None
                before = None if user is None else (view(db, user), memberships(db, user_id))
                user = self._ensure_user(db, user_id)
                for team, role in teams.items():
                    ensure_team(db, team)
                    member = db.get(TeamMember, (team, user_id))
                    if member is None:
                        db.add(TeamMember(team=team, user_id=user_id, role=role))
                    else:
                        member.role = role
                db.flush()
                self._apply(
                    db,
                    user,
                    UserChanges(
                        display_name=entry.get("display_name"),
                        email=entry.get("email"),
                        role=Role(entry["role"]) if entry.get("role") else None,
                        default_team=entry.get("default_team"),
                        default_project=entry.get("default_project"),
                    ),
                )
                db.flush()
                after = (view(db, user), memberships(db, user_id))
                if after != before:
                    epoch.bump(db)
            if created:
                result["created"].append(user_id)
            elif before != after:
                result["updated"].append(user_id)
            else:
                result["unchanged"].append(user_id)
        return result


def parse_teams(value: Any) -> dict[str, str]:
    """``["ml", "vision:lead"]`` or ``"ml;vision:lead"`` as {team: role}."""
    if value is None or value == "":
        return {}
    items = value.replace(";", ",").split(",") if isinstance(value, str) else list(value)
    teams: dict[str, str] = {}
    for item in items:
        name, _, role = str(item).strip().partition(":")
        role = role or "member"
        if role not in MEMBERSHIP_ROLES:
            raise InvalidRequest(f"team role {role!r}: use member or lead")
        teams[validate_name(name, "team")] = role
    return teams


def team_members(db: Db, team: str) -> list[TeamMember]:
    return list(
        db.scalars(select(TeamMember).where(TeamMember.team == team).order_by(TeamMember.user_id))
    )


__all__ = ["Directory", "Team", "UserChanges", "UserView", "parse_teams"]
