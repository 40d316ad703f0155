"""Who may do what: one pure decision from caller, action and target.

Routes and services never test roles themselves; they name the action and what
it acts on, and ``decide`` answers with the reason. The README's role table is
this module in words.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from sandman.errors import Forbidden, NotFound


class Role(StrEnum):
    ADMIN = "admin"  # everything, including settings, roles and other admins
    OPERATOR = "operator"  # all sessions, GPUs, users' sessions and quotas
    USER = "user"  # their own sessions, keys, tokens and usage


class Scope(StrEnum):
    """What a token may do within its owner's role."""

    READ = "read"  # only reads
    WRITE = "write"  # changes, short of role and token administration
    ADMIN = "admin"  # the owner's whole role


class Action(StrEnum):
    SESSION_CREATE = "session.create"
    SESSION_READ = "session.read"
    SESSION_LIST_ALL = "session.list_all"
    SESSION_EXTEND = "session.extend"
    SESSION_END = "session.end"
    SESSION_END_ALL = "session.end_all"
    SESSION_STATS = "session.stats"
    GPU_READ = "gpu.read"
    GPU_MANAGE = "gpu.manage"
    USER_READ = "user.read"
    USER_LIST = "user.list"
    USER_CREATE = "user.create"
    USER_UPDATE = "user.update"
    USER_SET_ROLE = "user.set_role"
    USER_DISABLE = "user.disable"
    KEY_MANAGE = "user.keys"
    WORKSPACE_READ = "workspace.read"
    WORKSPACE_QUOTA = "workspace.quota"
    QUOTA_READ = "quota.read"  # quotas that apply to the target user
    QUOTA_MANAGE = "quota.manage"
    TOKEN_CREATE = "token.create"
    TOKEN_READ = "token.read"
    TOKEN_REVOKE = "token.revoke"
    TEAM_READ = "team.read"
    TEAM_MANAGE = "team.manage"
    PROJECT_READ = "project.read"
    PROJECT_MANAGE = "project.manage"
    AUDIT_READ = "audit.read"
    CONNECTION_READ = "connection.read"
    NOTIFICATION_READ = "notification.read"
    NOTIFICATION_SET = "notification.set"
    NOTIFICATION_DEFAULTS = "notification.defaults"
    CAPACITY_READ = "capacity.read"  # the capacity view and the MIG layout advice
    USAGE_READ = "usage.read"  # GPU usage and cost of the target user (or led team)
    USAGE_READ_ALL = "usage.read_all"  # everyone's, with idle capacity
    BUDGET_READ = "budget.read"  # a team's budgets and forecasts (and its projects')
    BUDGET_MANAGE = "budget.manage"
    ENVIRONMENT_READ = "environment.read"  # environments allowed to the caller's teams
    ENVIRONMENT_READ_ALL = "environment.read_all"  # every environment, restricted or not
    ENVIRONMENT_MANAGE = "environment.manage"  # register, change, remove and build
    APP_USE = "session.app"  # a session's web apps (JupyterLab, VS Code): its owner's
    APP_USE_ANY = "session.app_any"  # another user's web apps: admins, when allowed


READS = frozenset(
    {
        Action.SESSION_READ,
        Action.SESSION_LIST_ALL,
        Action.SESSION_STATS,
        Action.GPU_READ,
        Action.USER_READ,
        Action.USER_LIST,
        Action.WORKSPACE_READ,
        Action.TOKEN_READ,
        Action.TEAM_READ,
        Action.PROJECT_READ,
        Action.AUDIT_READ,
        Action.CONNECTION_READ,
        Action.NOTIFICATION_READ,
        Action.QUOTA_READ,
        Action.CAPACITY_READ,
        Action.USAGE_READ,
        Action.USAGE_READ_ALL,
        Action.BUDGET_READ,
        Action.ENVIRONMENT_READ,
        Action.ENVIRONMENT_READ_ALL,
    }
)
# Role and token administration: a token needs scope ``admin`` for these.
ADMINISTRATION = frozenset({Action.USER_SET_ROLE, Action.TOKEN_CREATE, Action.TOKEN_REVOKE})

# What an operator may not do: change roles or the notification defaults; tokens are
# their own only (below).
OPERATOR_DENIED = frozenset(
    {Action.USER_SET_ROLE, Action.NOTIFICATION_DEFAULTS, Action.APP_USE_ANY}
)
# What nobody but the owner may do, whatever their role: a web app runs the owner's
# code in the browser of whoever opens it (``may_use_apps`` names the exception).
OWNER_ONLY = frozenset({Action.APP_USE})
# What every user may do on their own things (``owner`` is the caller).
OWN = frozenset(
    {
        Action.SESSION_CREATE,
        Action.SESSION_READ,
        Action.SESSION_EXTEND,
        Action.SESSION_END,
        Action.USER_READ,
        Action.USER_UPDATE,
        Action.KEY_MANAGE,
        Action.WORKSPACE_READ,
        Action.QUOTA_READ,
        Action.TOKEN_CREATE,
        Action.TOKEN_READ,
        Action.TOKEN_REVOKE,
        Action.NOTIFICATION_READ,
        Action.NOTIFICATION_SET,
        Action.USAGE_READ,
        Action.APP_USE,
    }
)
# What every user may do whoever owns it.
ANYONE = frozenset({Action.GPU_READ, Action.SESSION_STATS, Action.ENVIRONMENT_READ})
# What a team's lead may do on the team's things.
LEAD = frozenset({Action.SESSION_READ, Action.SESSION_END, Action.USAGE_READ})
# What a team's member may read about the team.
MEMBER = frozenset({Action.TEAM_READ, Action.PROJECT_READ, Action.BUDGET_READ})
TOKENS = frozenset({Action.TOKEN_CREATE, Action.TOKEN_READ, Action.TOKEN_REVOKE})


@dataclass(frozen=True)
class Caller:
    """An authenticated caller. ``user_id`` is None for the bootstrap admin token."""

    user_id: str | None
    role: Role
    scopes: frozenset[Scope] = frozenset(Scope)
    teams: Mapping[str, str] = field(default_factory=dict)  # team -> member | lead
    via: str = "token"  # bootstrap | token | cookie
    token_name: str | None = None

    @property
    def actor(self) -> str:
        """The name the audit trail records."""
        return self.user_id or "bootstrap-admin"

    def leads(self, team: str | None) -> bool:
        return team is not None and self.teams.get(team) == "lead"


BOOTSTRAP = Caller(user_id=None, role=Role.ADMIN, via="bootstrap")


@dataclass(frozen=True)
class Target:
    """What an action acts on: whose it is, which team, and the role of a target user."""

    owner: str | None = None
    team: str | None = None
    role: Role | None = None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


def needed_scope(action: Action) -> Scope:
    if action in READS:
        return Scope.READ
    if action in ADMINISTRATION:
        return Scope.ADMIN
    return Scope.WRITE


def _grants(scopes: frozenset[Scope], needed: Scope) -> bool:
    if Scope.ADMIN in scopes:
        return True
    return needed in scopes or (needed == Scope.READ and Scope.WRITE in scopes)


def decide(caller: Caller, action: Action, target: Target | None = None) -> Decision:
    """Whether ``caller`` may do ``action`` on ``target``, with the reason if not."""
    target = target or Target()
    scope = needed_scope(action)
    if not _grants(caller.scopes, scope):
        return Decision(False, f"{action} needs a token with scope {scope.value}")
    own = target.owner is not None and target.owner == caller.user_id
    if action in OWNER_ONLY and not own:
        return Decision(False, f"{action} is for the session's owner only")
    if caller.role == Role.ADMIN:
        return Decision(True)
    if caller.role == Role.OPERATOR:
        if action in OPERATOR_DENIED:
            return Decision(False, f"{action} needs role admin")
        if action in TOKENS and not own:
            return Decision(False, f"{action} for another user needs role admin")
        if target.role == Role.ADMIN and not own and action not in READS:
            return Decision(False, f"{action} on an admin needs role admin")
        return Decision(True)
    if action in ANYONE or (own and action in OWN):
        return Decision(True)
    if action in LEAD and caller.leads(target.team):
        return Decision(True)
    if action in MEMBER and target.team is not None and target.team in caller.teams:
        return Decision(True)
    who = "another user's" if target.owner is not None and not own else "this"
    lead = f" or lead of team {target.team}" if action in LEAD and target.team else ""
    return Decision(False, f"{action} on {who} needs role operator or admin{lead}")


def require(caller: Caller, action: Action, target: Target | None = None) -> None:
    """``decide``, raising ``Forbidden`` (403) with the reason."""
    decision = decide(caller, action, target)
    if not decision.allowed:
        raise Forbidden(decision.reason)


def require_visible(caller: Caller, action: Action, target: Target, what: str) -> None:
    """Like ``require``, but a caller who may not even read the object gets 404, so
    another user's sessions stay invisible, not merely forbidden."""
    if (
        not decide(caller, Action.SESSION_READ, target).allowed
        and not decide(caller, action, target).allowed
    ):
        raise NotFound(f"no {what}")
    require(caller, action, target)


def may_use_apps(caller: Caller, target: Target, admins_allowed: bool) -> Decision:
    """Whether ``caller`` may use the web apps of a session of ``target.owner``: the
    owner, and admins too where the deployment allows it (``apps_admin_access``)."""
    decision = decide(caller, Action.APP_USE, target)
    if decision.allowed or not admins_allowed:
        return decision
    return decide(caller, Action.APP_USE_ANY, target)


@dataclass(frozen=True)
class Visibility:
    """Which sessions a caller's lists show: all, or their own and their led teams'."""

    all: bool
    user_id: str | None = None
    teams: frozenset[str] = frozenset()


def session_visibility(caller: Caller) -> Visibility:
    if decide(caller, Action.SESSION_LIST_ALL).allowed:
        return Visibility(all=True)
    led = frozenset(team for team, role in caller.teams.items() if role == "lead")
    return Visibility(all=False, user_id=caller.user_id, teams=led)


def usage_visibility(caller: Caller) -> Visibility:
    """Whose usage a caller's reports show: everyone's, or their own and their led
    teams'; ``Forbidden`` for a token that may not read."""
    if decide(caller, Action.USAGE_READ_ALL).allowed:
        return Visibility(all=True)
    require(caller, Action.USAGE_READ, Target(owner=caller.user_id))
    led = frozenset(team for team, role in caller.teams.items() if role == "lead")
    return Visibility(all=False, user_id=caller.user_id, teams=led)


def grantable_scopes(caller: Caller, asked: list[Scope] | None) -> frozenset[Scope]:
    """The scopes a new token gets: as asked, never wider than the caller's own."""
    if asked is None:
        return caller.scopes
    wanted = frozenset(asked)
    wider = [s.value for s in wanted if not _grants(caller.scopes, s)]
    if wider:
        raise Forbidden(
            f"a token cannot get scopes wider than the caller's: {', '.join(sorted(wider))}"
        )
    return wanted
