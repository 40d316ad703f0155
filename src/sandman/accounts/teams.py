"""Teams (a user may be in several, as ``member`` or ``lead``) and projects (each in
one team): what a session is charged to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session as Db

from sandman.accounts import epoch
from sandman.accounts.directory import MEMBERSHIP_ROLES, team_members
from sandman.accounts.policy import Action, Caller, Role, decide
from sandman.domain import SessionStatus, validate_name, validate_user_id
from sandman.errors import Conflict, Forbidden, InvalidRequest, NotFound
from sandman.store.database import Database
from sandman.store.models import Project, Team, TeamMember, User, utcnow
from sandman.store.models import Session as SessionRow

ACTIVE = [s.value for s in SessionStatus if not s.ended]  # queued requests too
WITHOUT_TEAM = "default"  # the team of a project created without one


@dataclass(frozen=True)
class TeamView:
    name: str
    description: str | None
    created_at: datetime
    members: dict[str, str]
    projects: list[str]


@dataclass(frozen=True)
class ProjectView:
    name: str
    team: str
    description: str | None
    created_at: datetime


@dataclass(frozen=True)
class Charge:
    """The team and project a session is charged to (either may be unset)."""

    team: str | None
    project: str | None


def ensure_team(db: Db, name: str) -> Team:
    team = db.get(Team, validate_name(name, "team"))
    if team is None:
        team = Team(name=name, created_at=utcnow())
        db.add(team)
        db.flush()
    return team


def _team_view(db: Db, team: Team) -> TeamView:
    return TeamView(
        name=team.name,
        description=team.description,
        created_at=team.created_at,
        members={m.user_id: m.role for m in team_members(db, team.name)},
        projects=list(
            db.scalars(select(Project.name).where(Project.team == team.name).order_by(Project.name))
        ),
    )


def _project_view(project: Project) -> ProjectView:
    return ProjectView(project.name, project.team, project.description, project.created_at)


class Teams:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- teams ---------------------------------------------------------------------
    def list_teams(self, caller: Caller) -> list[TeamView]:
        everything = decide(caller, Action.TEAM_MANAGE).allowed
        with self.db.read() as db:
            teams = db.scalars(select(Team).order_by(Team.name))
            return [_team_view(db, t) for t in teams if everything or t.name in caller.teams]

    def get_team(self, name: str) -> TeamView:
        with self.db.read() as db:
            return _team_view(db, self._team(db, name))

    def create_team(self, name: str, description: str | None) -> TeamView:
        validate_name(name, "team")
        with self.db.transaction() as db:
            if db.get(Team, name) is not None:
                raise Conflict(f"team {name} exists")
            team = Team(name=name, description=description, created_at=utcnow())
            db.add(team)
            db.flush()
            return _team_view(db, team)

    def update_team(self, name: str, description: str | None) -> TeamView:
        with self.db.transaction() as db:
            team = self._team(db, name)
            team.description = description
            return _team_view(db, team)

    def delete_team(self, name: str) -> None:
        """Only an empty team goes: its projects carry sessions' charges."""
        with self.db.transaction() as db:
            team = self._team(db, name)
            projects = db.scalar(select(func.count()).where(Project.team == name)) or 0
            if projects:
                raise Conflict(f"team {name} still has {projects} projects; delete them first")
            for member in team_members(db, name):
                db.delete(member)
            db.delete(team)
            epoch.bump(db)

    def put_member(self, name: str, user_id: str, role: str) -> TeamView:
        if role not in MEMBERSHIP_ROLES:
            raise InvalidRequest(f"membership role {role!r}: use member or lead")
        with self.db.transaction() as db:
            team = self._team(db, name)
            if db.get(User, validate_user_id(user_id)) is None:
                raise NotFound(f"no user {user_id!r}")
            member = db.get(TeamMember, (name, user_id))
            if member is None:
                db.add(TeamMember(team=name, user_id=user_id, role=role))
            else:
                member.role = role
            epoch.bump(db)
            db.flush()
            return _team_view(db, team)

    def delete_member(self, name: str, user_id: str) -> TeamView:
        with self.db.transaction() as db:
            team = self._team(db, name)
            member = db.get(TeamMember, (name, validate_user_id(user_id)))
            if member is None:
                raise NotFound(f"{user_id} is not a member of team {name}")
            db.delete(member)
            user = db.get(User, user_id)
            if user is not None and user.default_team == name:
                user.default_team = None
            epoch.bump(db)
            db.flush()
            return _team_view(db, team)

    def _team(self, db: Db, name: str) -> Team:
        team = db.get(Team, validate_name(name, "team"))
        if team is None:
            raise NotFound(f"no team {name!r}")
        return team

    # -- projects ------------------------------------------------------------------
    def list_projects(self, caller: Caller, team: str | None = None) -> list[ProjectView]:
        everything = decide(caller, Action.PROJECT_MANAGE).allowed
        query = select(Project).order_by(Project.name)
        if team is not None:
            query = query.where(Project.team == validate_name(team, "team"))
        with self.db.read() as db:
            return [
                _project_view(p) for p in db.scalars(query) if everything or p.team in caller.teams
            ]

    def get_project(self, name: str) -> ProjectView:
        with self.db.read() as db:
            return _project_view(self._project(db, name))

    def create_project(self, name: str, team: str, description: str | None) -> ProjectView:
        validate_name(name, "project")
        with self.db.transaction() as db:
            if db.get(Project, name) is not None:
                raise Conflict(f"project {name} exists")
            self._team(db, team)
            project = Project(name=name, team=team, description=description, created_at=utcnow())
            db.add(project)
            db.flush()
            return _project_view(project)

    def update_project(self, name: str, description: str | None, team: str | None) -> ProjectView:
        with self.db.transaction() as db:
            project = self._project(db, name)
            if description is not None:
                project.description = description
            if team is not None:
                project.team = self._team(db, team).name
            db.flush()
            return _project_view(project)

    def delete_project(self, name: str) -> None:
        with self.db.transaction() as db:
            project = self._project(db, name)
            running = db.scalar(
                select(func.count()).where(
                    SessionRow.project == name, SessionRow.status.in_(ACTIVE)
                )
            )
            if running:
                raise Conflict(f"{running} active sessions are charged to project {name}")
            db.delete(project)

    def _project(self, db: Db, name: str) -> Project:
        project = db.get(Project, validate_name(name, "project"))
        if project is None:
            raise NotFound(f"no project {name!r}")
        return project

    # -- charging a session ----------------------------------------------------------
    def charge(self, caller: Caller, user_id: str, team: str | None, project: str | None) -> Charge:
        """The team and project a new session of ``user_id`` is charged to.

        Unnamed: the user's defaults. An admin's or operator's unknown name is created
        (a project in the named or the user's default team); a user's unknown name is
        400, and a team or project the user is not a member of is 403.
        """
        override = caller.role in (Role.ADMIN, Role.OPERATOR)
        with self.db.transaction() as db:
            user = db.get(User, user_id)
            mine = {
                m.team: m.role
                for m in db.scalars(select(TeamMember).where(TeamMember.user_id == user_id))
            }
            if team is None and project is None and user is not None:
                return Charge(user.default_team, user.default_project)
            if team is not None:
                validate_name(team, "team")
                if db.get(Team, team) is None:
                    if not override:
                        raise InvalidRequest(f"no team {team!r}")
                    ensure_team(db, team)
                elif not override and team not in mine:
                    raise Forbidden(f"{user_id} is not a member of team {team}")
            if project is None:
                return Charge(
                    team, user.default_project if user and team == user.default_team else None
                )
            validate_name(project, "project")
            row = db.get(Project, project)
            if row is None:
                if not override:
                    raise InvalidRequest(f"no project {project!r}")
                # Like the names migrated from before accounts: no team, team "default".
                owner = team or (user.default_team if user else None) or WITHOUT_TEAM
                ensure_team(db, owner)
                row = Project(name=project, team=owner, created_at=utcnow())
                db.add(row)
                db.flush()
            if team is not None and row.team != team:
                raise Conflict(f"project {project} belongs to team {row.team}, not {team}")
            if not override and row.team not in mine:
                raise Forbidden(f"{user_id} is not a member of team {row.team}")
            return Charge(row.team, row.name)
