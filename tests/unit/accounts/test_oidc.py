"""Single sign-on's pure decisions: user names, account binding, the group map,
where a login lands, and the sealed flow."""

from __future__ import annotations

import pytest

from sandman.accounts.oidc import (
    DEFAULT_NEXT,
    Account,
    Binding,
    CliRequest,
    Flow,
    FlowExpired,
    GroupMap,
    GroupRule,
    LoginRefused,
    challenge_of,
    check_cli,
    check_next,
    choose_account,
    derive_user_id,
    grants,
    groups_of,
    membership_changes,
    parse_group_map,
    seal,
    token_name,
    unseal,
)
from sandman.accounts.policy import Role
from sandman.errors import ConfigurationError, InvalidRequest

ISS = "https://idp.example.org"


# -- user names -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("claimed", "expected"),
    [
        ("alice", "alice"),
        ("Alice", "alice"),
        ("j.doe", "j_doe"),
        ("jane.doe@example.org", "jane_doe_example_org"),
        ("Élodie", "_lodie"),
        (" bob ", "bob"),
        ("a" * 40, "a" * 32),
        ("x-ray_1", "x-ray_1"),
    ],
)
def test_user_names_from_claims(claimed: str, expected: str) -> None:
    assert derive_user_id(claimed, "preferred_username") == expected


@pytest.mark.parametrize(
    ("claimed", "reason"),
    [
        (None, "no 'preferred_username' claim"),
        ("", "no 'preferred_username' claim"),
        (42, "no 'preferred_username' claim"),
        ("root", "reserved"),
        ("Root", "reserved"),
        ("1password", "starting with a letter"),
        ("-dash", "starting with a letter"),
    ],
)
def test_unusable_names_are_refused(claimed: object, reason: str) -> None:
    with pytest.raises(LoginRefused, match=reason) as caught:
        derive_user_id(claimed, "preferred_username")
    assert caught.value.status_code == 403


# -- binding ----------------------------------------------------------------------
def account(
    user_id: str, subject: str | None = None, status: str = "active", issuer: str = ISS
) -> Account:
    return Account(user_id, status, issuer if subject else None, subject)


def test_an_identity_already_bound_keeps_its_account_whatever_its_name() -> None:
    bound = account("jdoe", "sub-1")
    assert choose_account(ISS, "sub-1", None, None, bound, None) == Binding("jdoe")


def test_a_bound_but_disabled_account_is_refused() -> None:
    with pytest.raises(LoginRefused, match="disabled") as caught:
        choose_account(ISS, "sub-1", None, None, account("jdoe", "sub-1", "disabled"), None)
    assert caught.value.user_id == "jdoe"


def test_a_new_name_creates_an_account() -> None:
    assert choose_account(ISS, "s", "j.doe", "j_doe", None, None) == Binding("j_doe", create=True)


def test_a_name_bound_to_another_identity_is_never_merged() -> None:
    with pytest.raises(LoginRefused, match="another identity") as caught:
        choose_account(ISS, "sub-2", "j_doe", "j_doe", None, account("j_doe", "sub-1"))
    assert caught.value.user_id is None


def test_an_account_an_admin_made_is_bound_when_the_name_is_exact() -> None:
    made = account("erin")
    assert choose_account(ISS, "s", "Erin", "erin", None, made) == Binding("erin", bind=True)


def test_a_changed_name_never_captures_an_account_an_admin_made() -> None:
    with pytest.raises(LoginRefused, match="different name"):
        choose_account(ISS, "s", "j.doe", "j_doe", None, account("j_doe"))


def test_an_unbound_disabled_account_is_refused() -> None:
    with pytest.raises(LoginRefused, match="disabled"):
        choose_account(ISS, "s", "erin", "erin", None, account("erin", status="disabled"))


# -- the group map ----------------------------------------------------------------
MAP = parse_group_map(
    {
        "groups": {
            "gpu-admins": {"role": "admin"},
            "ops": {"role": "operator", "teams": {"infra": "lead"}},
            "ml-lab": {"teams": {"ml": "member"}},
            "ml-leads": {"teams": {"ml": "lead"}},
        }
    }
)


def test_the_highest_role_wins_and_user_is_the_default() -> None:
    assert grants(MAP, ["ops", "gpu-admins"]).role == Role.ADMIN
    assert grants(MAP, ["ops"]).role == Role.OPERATOR
    assert grants(MAP, ["ml-lab", "nobody-knows"]).role == Role.USER
    assert grants(MAP, []).role == Role.USER


def test_a_map_without_roles_leaves_roles_alone() -> None:
    teams_only = parse_group_map({"groups": {"ml-lab": {"teams": {"ml": "member"}}}})
    assert not teams_only.decides_roles
    assert grants(teams_only, ["ml-lab"]).role is None
    assert grants(GroupMap(), ["anything"]) == grants(teams_only, [])


def test_the_highest_membership_per_team_wins() -> None:
    assert grants(MAP, ["ml-leads", "ml-lab"]).teams == {"ml": "lead"}
    assert grants(MAP, ["ml-lab", "ops"]).teams == {"ml": "member", "infra": "lead"}


def test_memberships_are_added_or_raised_never_removed_or_lowered() -> None:
    current = {"ml": "lead", "vision": "member", "old": "member"}
    granted = {"ml": "member", "vision": "lead", "new": "member"}
    assert membership_changes(current, granted) == {"vision": "lead", "new": "member"}


def test_a_group_map_parses_to_rules() -> None:
    assert MAP.rules["ops"] == GroupRule(Role.OPERATOR, {"infra": "lead"})
    assert parse_group_map(None) == GroupMap()
    assert parse_group_map({"groups": None}) == GroupMap()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (["a"], "one key, 'groups'"),
        ({"groups": {}, "extra": 1}, "one key, 'groups'"),
        ({"groups": ["a"]}, "map group names"),
        ({"groups": {"g": {"role": "root"}}}, "not one of admin"),
        ({"groups": {"g": {"teams": {"ml": "boss"}}}}, "member or lead"),
        ({"groups": {"g": {"teams": {"-bad": "member"}}}}, "invalid team name"),
        ({"groups": {"g": {"teams": ["ml"]}}}, "map team names"),
        ({"groups": {"g": {"roles": "admin"}}}, "nothing else"),
        ({"groups": {"g": {}}}, "nothing else"),
        ({"groups": {"g": "admin"}}, "nothing else"),
    ],
)
def test_a_bad_group_map_is_refused_at_start_up(data: object, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        parse_group_map(data)


def test_the_groups_claim() -> None:
    assert groups_of({"groups": ["a", 3, "b"]}, "groups") == ["a", "b"]
    assert groups_of({"groups": "a"}, "groups") == ["a"]
    assert groups_of({}, "groups") == []
    assert groups_of({"roles": ["x"]}, "roles") == ["x"]


# -- where a login lands ----------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/api/v1/me", "/s/abc/lab?x=1#top", "/a/b%2Fc"])
def test_next_accepts_paths_here(path: str) -> None:
    assert check_next(path) == path


def test_next_defaults_to_me() -> None:
    assert check_next(None) == check_next("") == DEFAULT_NEXT


@pytest.mark.parametrize(
    "bad",
    [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "evil.example",
        "/ok\r\nSet-Cookie: x=1",
        "/tab\there",
        "/" + "a" * 2048,
    ],
)
def test_next_never_leaves_the_site(bad: str) -> None:
    with pytest.raises(InvalidRequest, match="path on this site"):
        check_next(bad)


# -- the CLI's side ---------------------------------------------------------------
def test_the_challenge_is_pkce_s256() -> None:
    # RFC 7636, appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert challenge_of(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_cli_parameters() -> None:
    challenge = challenge_of("v" * 43)
    assert check_cli(None, None, None) is None
    request = check_cli(40000, "s" * 16, challenge)
    assert request == CliRequest(40000, "s" * 16, challenge)
    assert request.redirect(code="c") == (
        f"http://127.0.0.1:40000/callback?code=c&state={'s' * 16}"
    )
    for port, state, chal in [
        (80, "s" * 16, challenge),
        (70000, "s" * 16, challenge),
        (None, "s" * 16, challenge),
        (40000, "short", challenge),
        (40000, "s" * 15 + "/", challenge),
        (40000, "s" * 16, None),
        (40000, "s" * 16, "x" * 42),
    ]:
        with pytest.raises(InvalidRequest):
            check_cli(port, state, chal)


def test_token_names() -> None:
    assert token_name("laptop.example.org") == "cli@laptop.example.org"
    assert token_name("bad\x00host\n") == "cli@badhost"
    assert token_name("") == "cli@unknown"
    assert len(token_name("h" * 300)) == 64


# -- the sealed flow --------------------------------------------------------------
KEY = bytes(range(32))
FLOW = Flow("state", "nonce", "verifier", "/next", 1000.0, CliRequest(40000, "c" * 16, "x" * 43))


def test_a_flow_survives_the_browser() -> None:
    assert unseal(seal(FLOW, KEY), KEY, now=999.0) == FLOW
    plain = Flow("s", "n", "v", "/", 1000.0)
    assert unseal(seal(plain, KEY), KEY, now=0.0) == plain


def test_the_sealed_flow_hides_the_verifier() -> None:
    assert "verifier" not in seal(FLOW, KEY)


@pytest.mark.parametrize("problem", ["missing", "forged", "other key", "expired", "garbage"])
def test_a_flow_that_cannot_be_trusted_is_refused(problem: str) -> None:
    sealed = seal(FLOW, KEY)
    cases = {
        "missing": (None, KEY, 0.0),
        "forged": (sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB"), KEY, 0.0),
        "other key": (sealed, bytes(32), 0.0),
        "expired": (sealed, KEY, 1000.0),
        "garbage": ("!!!not base64", KEY, 0.0),
    }
    value, key, now = cases[problem]
    with pytest.raises(FlowExpired, match="/auth/login") as caught:
        unseal(value, key, now)
    assert caught.value.status_code == 400
