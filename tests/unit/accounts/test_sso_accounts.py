"""Single sign-on against the database, with the provider's verified identity given
directly: accounts across logins, the group map re-applied, the CLI's one-time code."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import fake_core

from sandman.accounts.oidc import challenge_of
from sandman.accounts.oidc_client import Identity
from sandman.accounts.policy import Role, Scope
from sandman.accounts.sso import SingleSignOn
from sandman.core import Sandman
from sandman.errors import Conflict, InvalidRequest
from sandman.store.models import CliLoginCode, utcnow

ISS = "https://idp.example.org"
VERIFIER = "v" * 64


@pytest.fixture
def core(tmp_path: Path) -> Iterator[Sandman]:
    groups = tmp_path / "groups.yaml"
    groups.write_text(
        "groups:\n  admins: {role: admin}\n  ml: {teams: {ml: member}}\n"
        "  ml-leads: {teams: {ml: lead}}\n"
    )
    sandman = fake_core(
        tmp_path / "data",
        FakeRuntime(),
        public_url="https://gpu.example.org",
        oidc_issuer=ISS,
        oidc_client_id="sandman",
        oidc_group_map=groups,
    )
    yield sandman
    sandman.stop()


def sso(core: Sandman) -> SingleSignOn:
    assert core.sso is not None
    return core.sso


def person(subject: str, username: str, **claims: Any) -> Identity:
    return Identity(ISS, subject, {"sub": subject, "preferred_username": username, **claims})


def test_a_renamed_person_keeps_their_account(core: Sandman) -> None:
    assert sso(core).sign_in(person("s1", "jane"))[0] == "jane"
    assert sso(core).sign_in(person("s1", "jane.smith"))[0] == "jane"
    assert [u.user_id for u in core.accounts.directory.list_users()] == ["jane"]


def test_the_group_map_applies_at_every_login(core: Sandman) -> None:
    login = sso(core).sign_in
    user, how = login(person("s1", "kim", groups=["admins", "ml-leads"]))
    assert how == {"created": True, "bound": False, "granted": {"role": "admin", "team ml": "lead"}}
    _, token = core.credentials.create_token(user, "t", frozenset(Scope), None, user)
    assert core.credentials.check_token(token).role == Role.ADMIN  # now cached
    # Out of the admins group: the role follows; the lead membership stays.
    _, how = login(person("s1", "kim", groups=["ml"]))
    assert how == {"created": False, "bound": False, "granted": {"role": "user"}}
    assert core.credentials.check_token(token).role == Role.USER  # the cache saw it
    assert core.accounts.directory.get("kim").teams == {"ml": "lead"}
    _, how = login(person("s1", "kim", groups=["ml"]))
    assert "granted" not in how


def test_the_provider_fills_an_empty_profile_only(core: Sandman) -> None:
    login = sso(core).sign_in
    login(person("s1", "lee", name="Lee L", email="lee@example.org"))
    login(person("s1", "lee", name="Someone Else", email="not an address"))
    view = core.accounts.directory.get("lee")
    assert (view.display_name, view.email) == ("Lee L", "lee@example.org")


def test_the_cli_code_is_used_once(core: Sandman) -> None:
    sso(core).sign_in(person("s1", "max"))
    code = sso(core)._cli_code("max", challenge_of(VERIFIER))
    issued = sso(core).exchange(code, VERIFIER, "box", "127.0.0.1")
    assert issued.view.name == "cli@box"
    assert issued.view.scopes == sorted(s.value for s in Scope)
    assert issued.view.expires_at is not None
    assert core.credentials.check_token(issued.secret).user_id == "max"
    with pytest.raises(InvalidRequest, match="already used"):
        sso(core).exchange(code, VERIFIER, "box", None)
    [record] = core.audit.query(actor="max", action="token.create")
    assert record.target == issued.view.id


def test_a_wrong_verifier_burns_the_code(core: Sandman) -> None:
    sso(core).sign_in(person("s1", "max"))
    code = sso(core)._cli_code("max", challenge_of(VERIFIER))
    with pytest.raises(InvalidRequest, match="verifier"):
        sso(core).exchange(code, "w" * 64, "box", None)
    with pytest.raises(InvalidRequest, match="already used"):
        sso(core).exchange(code, VERIFIER, "box", None)


def test_an_old_code_is_refused(core: Sandman) -> None:
    sso(core).sign_in(person("s1", "max"))
    code = sso(core)._cli_code("max", challenge_of(VERIFIER))
    with core.db.transaction() as db:
        db.execute(update(CliLoginCode).values(expires_at=utcnow() - timedelta(seconds=1)))
    with pytest.raises(InvalidRequest, match="expired"):
        sso(core).exchange(code, VERIFIER, "box", None)


def test_no_token_for_a_user_disabled_meanwhile(core: Sandman) -> None:
    sso(core).sign_in(person("s1", "max"))
    code = sso(core)._cli_code("max", challenge_of(VERIFIER))
    core.accounts.directory.disable("max")
    with pytest.raises(Conflict, match="disabled"):
        sso(core).exchange(code, VERIFIER, "box", None)
