"""Tokens and logins: kept as hashes, refused at once when revoked, expired or
their user disabled, and ``last_used_at`` written at most once a minute."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from sandman.accounts.directory import UserChanges
from sandman.accounts.policy import Role, Scope
from sandman.accounts.tokens import digest
from sandman.core import Sandman
from sandman.errors import Conflict, InvalidRequest, Unauthorized
from sandman.store.models import ApiToken, utcnow

ALL = frozenset(Scope)


def test_a_token_is_kept_only_as_a_hash(core: Sandman) -> None:
    core.accounts.directory.create("alice", UserChanges())
    view, secret = core.credentials.create_token("alice", "laptop", ALL, 30, "alice")
    assert secret.startswith("sm_") and len(secret) > 40
    assert view.prefix == secret[:10]
    with core.db.read() as db:
        stored = db.scalars(select(ApiToken)).one()
    assert stored.secret_hash == digest(secret)
    assert secret not in repr(stored.__dict__)
    caller = core.credentials.check_token(secret)
    assert caller.user_id == "alice" and caller.role == Role.USER and caller.token_name == "laptop"


def test_revoked_expired_and_unknown_tokens_are_refused(core: Sandman) -> None:
    core.accounts.directory.create("alice", UserChanges())
    view, secret = core.credentials.create_token("alice", "ci", ALL, None, "alice")
    core.credentials.revoke(view.id)
    with pytest.raises(Unauthorized, match="revoked"):
        core.credentials.check_token(secret)
    view, secret = core.credentials.create_token("alice", "old", ALL, 1, "alice")
    with core.db.transaction() as db:
        db.execute(
            update(ApiToken)
            .where(ApiToken.id == view.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    with pytest.raises(Unauthorized, match="expired"):
        core.credentials.check_token(secret)
    with pytest.raises(Unauthorized, match="unknown"):
        core.credentials.check_token("sm_" + "x" * 43)


def test_disabling_a_user_revokes_tokens_and_logins(core: Sandman) -> None:
    core.accounts.directory.create("alice", UserChanges())
    _, secret = core.credentials.create_token("alice", "ci", ALL, None, "alice")
    login = core.credentials.create_login("alice")
    core.accounts.directory.disable("alice")
    with pytest.raises(Unauthorized):
        core.credentials.check_token(secret)
    with pytest.raises(Unauthorized):
        core.credentials.check_login(login.secret)
    assert all(t.revoked_at is not None for t in core.credentials.list_tokens("alice"))
    with pytest.raises(Conflict, match="disabled"):
        core.credentials.create_token("alice", "again", ALL, None, "ada")


def test_last_used_is_written_at_most_once_a_minute(core: Sandman) -> None:
    core.accounts.directory.create("alice", UserChanges())
    view, secret = core.credentials.create_token("alice", "ci", ALL, None, "alice")
    core.credentials.check_token(secret)
    first = core.credentials.token(view.id).last_used_at
    assert first is not None
    core.credentials.check_token(secret)
    assert core.credentials.token(view.id).last_used_at == first


def test_token_names_and_lifetimes_are_checked(core: Sandman) -> None:
    core.accounts.directory.create("alice", UserChanges())
    with pytest.raises(InvalidRequest):
        core.credentials.create_token("alice", "bad\nname", ALL, None, "alice")
    with pytest.raises(InvalidRequest):
        core.credentials.create_token("alice", "ok", ALL, 0, "alice")


def test_logins_carry_a_csrf_token_and_end(core: Sandman) -> None:
    core.accounts.directory.create("alice", UserChanges())
    login = core.credentials.create_login("alice")
    caller, csrf = core.credentials.check_login(login.secret)
    assert caller.user_id == "alice" and caller.via == "cookie" and csrf == login.csrf_token
    core.credentials.end_login(login.secret)
    with pytest.raises(Unauthorized):
        core.credentials.check_login(login.secret)


def test_a_revocation_elsewhere_ends_a_cached_token_at_once(core: Sandman) -> None:
    """Two processes share the database: one has the token cached, the other revokes
    it; the epoch moved, so the first refuses it on the very next request."""
    from datetime import timedelta as td

    from sandman.accounts.tokens import Credentials

    core.accounts.directory.create("alice", UserChanges())
    view, secret = core.credentials.create_token("alice", "ci", ALL, None, "alice")
    other = Credentials(core.db, core.accounts.directory, td(hours=1))
    assert core.credentials.check_token(secret).user_id == "alice"  # now cached
    other.revoke(view.id)
    with pytest.raises(Unauthorized, match="revoked"):
        core.credentials.check_token(secret)


def test_a_role_change_reaches_a_cached_caller(core: Sandman) -> None:
    core.accounts.directory.create("alice", UserChanges())
    _, secret = core.credentials.create_token("alice", "ci", ALL, None, "alice")
    assert core.credentials.check_token(secret).role == Role.USER
    core.accounts.directory.update("alice", UserChanges(role=Role.OPERATOR))
    assert core.credentials.check_token(secret).role == Role.OPERATOR


def test_a_login_records_when_its_user_was_last_seen(core: Sandman) -> None:
    core.accounts.directory.create("alice", UserChanges())
    login = core.credentials.create_login("alice")
    assert core.accounts.directory.get("alice").last_seen_at is None
    core.credentials.check_login(login.secret)
    seen = core.accounts.directory.get("alice").last_seen_at
    assert seen is not None
    core.credentials.check_login(login.secret)  # within the minute: no second write
    assert core.accounts.directory.get("alice").last_seen_at == seen
