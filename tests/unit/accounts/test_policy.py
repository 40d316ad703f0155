"""The role table, decided in one place: every role against every kind of target."""

from __future__ import annotations

import pytest

from sandman.accounts.policy import (
    BOOTSTRAP,
    Action,
    Caller,
    Role,
    Scope,
    Target,
    decide,
    grantable_scopes,
    require_visible,
    session_visibility,
)
from sandman.errors import Forbidden, NotFound

ALICE = Caller("alice", Role.USER, teams={"ml": "member"})
LEAD = Caller("lena", Role.USER, teams={"ml": "lead", "cv": "member"})
OPERATOR = Caller("otto", Role.OPERATOR)
ADMIN = Caller("ada", Role.ADMIN)

ALICES_SESSION = Target(owner="alice", team="ml")
BOBS_SESSION = Target(owner="bob", team="ml")
CAROLS_SESSION = Target(owner="carol", team="cv")


@pytest.mark.parametrize(
    ("caller", "action", "target", "allowed"),
    [
        # A user: their own sessions, nobody else's.
        (ALICE, Action.SESSION_CREATE, Target(owner="alice"), True),
        (ALICE, Action.SESSION_CREATE, Target(owner="bob"), False),
        (ALICE, Action.SESSION_READ, ALICES_SESSION, True),
        (ALICE, Action.SESSION_EXTEND, ALICES_SESSION, True),
        (ALICE, Action.SESSION_END, ALICES_SESSION, True),
        (ALICE, Action.SESSION_READ, BOBS_SESSION, False),
        (ALICE, Action.SESSION_END, BOBS_SESSION, False),
        (ALICE, Action.SESSION_END_ALL, None, False),
        (ALICE, Action.SESSION_LIST_ALL, None, False),
        (ALICE, Action.GPU_READ, None, True),
        (ALICE, Action.GPU_MANAGE, None, False),
        (ALICE, Action.KEY_MANAGE, Target(owner="alice"), True),
        (ALICE, Action.KEY_MANAGE, Target(owner="bob"), False),
        (ALICE, Action.TOKEN_CREATE, Target(owner="alice"), True),
        (ALICE, Action.TOKEN_CREATE, Target(owner="bob"), False),
        (ALICE, Action.USER_SET_ROLE, Target(owner="alice"), False),
        (ALICE, Action.USER_DISABLE, Target(owner="alice"), False),
        (ALICE, Action.AUDIT_READ, None, False),
        (ALICE, Action.WORKSPACE_READ, Target(owner="alice"), True),
        (ALICE, Action.WORKSPACE_READ, Target(owner="bob"), False),
        (ALICE, Action.WORKSPACE_QUOTA, Target(owner="alice"), False),
        (ALICE, Action.TEAM_READ, Target(team="ml"), True),
        (ALICE, Action.TEAM_READ, Target(team="cv"), False),
        (ALICE, Action.TEAM_MANAGE, None, False),
        # A team lead: the team's sessions to see and end, not to extend.
        (LEAD, Action.SESSION_READ, BOBS_SESSION, True),
        (LEAD, Action.SESSION_END, BOBS_SESSION, True),
        (LEAD, Action.SESSION_EXTEND, BOBS_SESSION, False),
        (LEAD, Action.SESSION_READ, CAROLS_SESSION, False),  # member only of cv
        # An operator: everything but roles and others' tokens; admins are off limits.
        (OPERATOR, Action.SESSION_END, BOBS_SESSION, True),
        (OPERATOR, Action.SESSION_END_ALL, None, True),
        (OPERATOR, Action.GPU_MANAGE, None, True),
        (OPERATOR, Action.USER_CREATE, None, True),
        (OPERATOR, Action.USER_DISABLE, Target(owner="bob", role=Role.USER), True),
        (OPERATOR, Action.USER_DISABLE, Target(owner="ada", role=Role.ADMIN), False),
        (OPERATOR, Action.USER_SET_ROLE, Target(owner="bob", role=Role.USER), False),
        (OPERATOR, Action.TOKEN_CREATE, Target(owner="bob"), False),
        (OPERATOR, Action.TOKEN_CREATE, Target(owner="otto"), True),
        (OPERATOR, Action.AUDIT_READ, None, True),
        (OPERATOR, Action.WORKSPACE_QUOTA, Target(owner="bob"), True),
        # An admin and the bootstrap token: everything.
        (ADMIN, Action.USER_SET_ROLE, Target(owner="otto", role=Role.OPERATOR), True),
        (ADMIN, Action.TOKEN_CREATE, Target(owner="bob"), True),
        (BOOTSTRAP, Action.TOKEN_CREATE, Target(owner="bob"), True),
    ],
)
def test_role_table(caller: Caller, action: Action, target: Target | None, allowed: bool) -> None:
    decision = decide(caller, action, target)
    assert decision.allowed is allowed
    assert bool(decision.reason) is not allowed  # every refusal says why


def test_refusals_name_what_is_needed() -> None:
    assert "operator or admin" in decide(ALICE, Action.SESSION_END, BOBS_SESSION).reason
    assert "lead of team ml" in decide(ALICE, Action.SESSION_END, BOBS_SESSION).reason
    assert "role admin" in decide(OPERATOR, Action.USER_SET_ROLE).reason


@pytest.mark.parametrize(
    ("scopes", "action", "allowed"),
    [
        ({Scope.READ}, Action.SESSION_READ, True),
        ({Scope.READ}, Action.SESSION_END, False),
        ({Scope.WRITE}, Action.SESSION_END, True),
        ({Scope.WRITE}, Action.SESSION_READ, True),
        ({Scope.WRITE}, Action.TOKEN_CREATE, False),  # token administration
        ({Scope.ADMIN}, Action.TOKEN_CREATE, True),
    ],
)
def test_scopes_narrow_a_token(scopes: set[Scope], action: Action, allowed: bool) -> None:
    caller = Caller("alice", Role.USER, scopes=frozenset(scopes))
    decision = decide(caller, action, Target(owner="alice", team="ml"))
    assert decision.allowed is allowed
    if not allowed:
        assert "scope" in decision.reason


def test_a_scope_never_widens_a_role() -> None:
    admin_scoped_user = Caller("alice", Role.USER, scopes=frozenset({Scope.ADMIN}))
    assert not decide(admin_scoped_user, Action.SESSION_END_ALL).allowed


def test_new_tokens_get_at_most_the_callers_scopes() -> None:
    reader = Caller("alice", Role.USER, scopes=frozenset({Scope.READ}))
    assert grantable_scopes(reader, None) == {Scope.READ}
    assert grantable_scopes(reader, [Scope.READ]) == {Scope.READ}
    with pytest.raises(Forbidden, match="wider"):
        grantable_scopes(reader, [Scope.WRITE])
    assert grantable_scopes(ADMIN, [Scope.READ]) == {Scope.READ}


def test_others_sessions_are_invisible_not_forbidden() -> None:
    with pytest.raises(NotFound):
        require_visible(ALICE, Action.SESSION_END, BOBS_SESSION, "session x")
    # A lead sees the session, so extending it is forbidden rather than not found.
    with pytest.raises(Forbidden):
        require_visible(LEAD, Action.SESSION_EXTEND, BOBS_SESSION, "session x")
    require_visible(LEAD, Action.SESSION_END, BOBS_SESSION, "session x")


def test_list_visibility() -> None:
    assert session_visibility(OPERATOR).all
    mine = session_visibility(LEAD)
    assert not mine.all and mine.user_id == "lena" and mine.teams == {"ml"}
    assert session_visibility(ALICE).teams == frozenset()
    reader = Caller("otto", Role.OPERATOR, scopes=frozenset({Scope.READ}))
    assert session_visibility(reader).all
