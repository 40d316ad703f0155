"""Single sign-on's decisions, with no I/O: which account a provider's identity is,
which roles and teams its groups give, where a login may land, and the sealed
cookie that carries a login in progress from ``/auth/login`` to ``/auth/callback``.

An account is bound to the provider's ``(iss, sub)``, never to a name: a user the
provider renames keeps their account, and two people whose names differ only in
characters Sandman cannot use (``j.doe`` and ``j_doe``) never share one.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sandman.accounts.directory import MEMBERSHIP_ROLES
from sandman.accounts.policy import Role
from sandman.domain import validate_name, validate_user_id
from sandman.errors import ConfigurationError, Forbidden, InvalidRequest, SandmanError

USER_ID_MAX = 32
UNUSABLE = re.compile(r"[^a-z0-9_-]")
ROLE_RANK = {Role.USER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}
MEMBERSHIP_RANK = {"member": 0, "lead": 1}
DEFAULT_NEXT = "/api/v1/me"  # where a login lands without ?next= (no portal yet)
CLI_STATE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
CLI_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url of a SHA-256, unpadded


class LoginRefused(Forbidden):
    """The provider vouched for someone Sandman will not let in (403). ``user_id`` is
    the account concerned, where one was found, for the audit trail."""

    def __init__(self, message: str, user_id: str | None = None) -> None:
        super().__init__(message)
        self.user_id = user_id


# -- user names -------------------------------------------------------------------
def derive_user_id(claimed: object, claim: str) -> str:
    """The user name made from the provider's name: lower-cased, every character
    outside ``[a-z0-9_-]`` replaced by ``_``, cut to 32. Refused (403) when missing or
    when the result still breaks the user-name rules (a reserved name, a leading
    digit or ``-``)."""
    if not isinstance(claimed, str) or not claimed.strip():
        raise LoginRefused(
            f"the provider sent no {claim!r} claim to make a user name from; ask an "
            "administrator to check SANDMAN_OIDC_USERNAME_CLAIM"
        )
    name = UNUSABLE.sub("_", claimed.strip().lower())[:USER_ID_MAX]
    try:
        return validate_user_id(name)
    except InvalidRequest as exc:
        raise LoginRefused(
            f"the name {claimed!r} from the provider cannot be a Sandman user name: "
            f"{exc.message}; ask an administrator"
        ) from None


def is_exact(claimed: str, user_id: str) -> bool:
    """Whether the provider's name is the user name itself (case aside), not a name
    that had to be changed to fit."""
    return claimed.strip().lower() == user_id


@dataclass(frozen=True)
class Account:
    """What the binding decision needs to know about an existing user."""

    user_id: str
    status: str
    issuer: str | None
    subject: str | None


@dataclass(frozen=True)
class Binding:
    user_id: str
    create: bool = False  # a first login: create the account
    bind: bool = False  # an account an administrator made: bind it to this identity


def choose_account(
    issuer: str,
    subject: str,
    claimed: str | None,
    user_id: str | None,
    bound: Account | None,
    named: Account | None,
) -> Binding:
    """Which account a verified identity logs in to.

    ``bound`` is the account already bound to ``(issuer, subject)``; failing that,
    ``user_id`` is the name derived from ``claimed`` and ``named`` the account of
    that name, if any. An account bound to another identity is never taken over,
    and an unbound one (made by an administrator) is bound only when the provider's
    name is exactly its name, so a name that had to be changed to fit cannot
    capture an account meant for someone else.
    """
    if bound is not None:
        if bound.status != "active":
            raise LoginRefused(f"the account {bound.user_id} is disabled", bound.user_id)
        return Binding(bound.user_id)
    if user_id is None or claimed is None:
        raise LoginRefused("the provider's identity has no usable user name")
    if named is None:
        return Binding(user_id, create=True)
    if named.subject is not None:
        raise LoginRefused(
            f"the user name {user_id} (from {claimed!r}) already belongs to another "
            "identity; ask an administrator to create your account under another name",
            None,
        )
    if not is_exact(claimed, user_id):
        raise LoginRefused(
            f"the user name {user_id} exists and was made from a different name than "
            f"{claimed!r}; ask an administrator to bind your account"
        )
    if named.status != "active":
        raise LoginRefused(f"the account {user_id} is disabled", user_id)
    return Binding(user_id, bind=True)


# -- the group map ----------------------------------------------------------------
@dataclass(frozen=True)
class GroupRule:
    role: Role | None = None
    teams: Mapping[str, str] = field(default_factory=dict)  # team -> member | lead


@dataclass(frozen=True)
class GroupMap:
    """``SANDMAN_OIDC_GROUP_MAP``: what each of the provider's groups gives."""

    rules: Mapping[str, GroupRule] = field(default_factory=dict)

    @property
    def decides_roles(self) -> bool:
        """With any role in the map, the provider's groups decide every SSO user's
        role; without one, roles stay as administrators set them."""
        return any(rule.role is not None for rule in self.rules.values())


@dataclass(frozen=True)
class Grants:
    role: Role | None
    teams: dict[str, str]


def parse_group_map(data: Any, source: str = "the group map") -> GroupMap:
    """Validate the map's YAML document; every mistake is a ``ConfigurationError``
    at start-up, never a surprise at someone's login::

        groups:
          gpu-admins: {role: admin}
          ml-lab: {teams: {ml: member}}
          ml-leads: {role: operator, teams: {ml: lead}}
    """
    if data is None:
        return GroupMap()
    if not isinstance(data, dict) or set(data) - {"groups"}:
        raise ConfigurationError(f"{source}: expected a mapping with one key, 'groups'")
    groups = data.get("groups") or {}
    if not isinstance(groups, dict):
        raise ConfigurationError(f"{source}: 'groups' must map group names to rules")
    rules: dict[str, GroupRule] = {}
    for group, rule in groups.items():
        where = f"{source}: group {group!r}"
        if not isinstance(group, str) or not group:
            raise ConfigurationError(f"{where}: a group name must be a non-empty string")
        if not isinstance(rule, dict) or not rule or set(rule) - {"role", "teams"}:
            raise ConfigurationError(f"{where}: give 'role' and/or 'teams', nothing else")
        rules[group] = GroupRule(_parse_role(rule.get("role"), where), _parse_teams(rule, where))
    return GroupMap(rules)


def _parse_role(value: Any, where: str) -> Role | None:
    if value is None:
        return None
    try:
        return Role(value)
    except ValueError:
        known = ", ".join(r.value for r in Role)
        raise ConfigurationError(f"{where}: role {value!r} is not one of {known}") from None


def _parse_teams(rule: dict[str, Any], where: str) -> dict[str, str]:
    teams = rule.get("teams") or {}
    if not isinstance(teams, dict):
        raise ConfigurationError(f"{where}: 'teams' must map team names to member or lead")
    parsed: dict[str, str] = {}
    for team, membership in teams.items():
        try:
            validate_name(str(team), "team")
        except InvalidRequest as exc:
            raise ConfigurationError(f"{where}: {exc.message}") from None
        if membership not in MEMBERSHIP_ROLES:
            raise ConfigurationError(f"{where}: team {team}: use member or lead")
        parsed[str(team)] = membership
    return parsed


def load_group_map(path: os.PathLike[str] | None) -> GroupMap:
    if path is None:
        return GroupMap()
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigurationError(f"cannot read the OIDC group map {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"the OIDC group map {path} is not YAML: {exc}") from None
    return parse_group_map(data, f"the OIDC group map {path}")


def groups_of(claims: Mapping[str, Any], claim: str) -> list[str]:
    """The groups claim as a list of names (a lone string is one group)."""
    value = claims.get(claim)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def grants(group_map: GroupMap, groups: list[str]) -> Grants:
    """What the groups give together: the highest role (``user`` when the map
    decides roles and no group names one) and the highest membership per team."""
    role: Role | None = Role.USER if group_map.decides_roles else None
    teams: dict[str, str] = {}
    for group in groups:
        rule = group_map.rules.get(group)
        if rule is None:
            continue
        if rule.role is not None and (role is None or ROLE_RANK[rule.role] > ROLE_RANK[role]):
            role = rule.role
        for team, membership in rule.teams.items():
            if MEMBERSHIP_RANK[membership] >= MEMBERSHIP_RANK.get(teams.get(team, ""), -1):
                teams[team] = membership
    return Grants(role, teams)


def membership_changes(current: Mapping[str, str], granted: Mapping[str, str]) -> dict[str, str]:
    """Memberships to write: those granted that are new, or raise member to lead.
    Nothing is removed or lowered: that stays an administrator's decision."""
    return {
        team: membership
        for team, membership in granted.items()
        if MEMBERSHIP_RANK[membership] > MEMBERSHIP_RANK.get(current.get(team, ""), -1)
    }


# -- where a login lands --------------------------------------------------------
def check_next(value: str | None) -> str:
    """``?next=``: a path on this site, never another site (an open redirect)."""
    if value is None or value == "":
        return DEFAULT_NEXT
    parts = urlsplit(value)
    if (
        len(value) > 2048
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or parts.scheme
        or parts.netloc
        or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value)
    ):
        raise InvalidRequest("next must be a path on this site, such as /api/v1/me")
    return value


@dataclass(frozen=True)
class CliRequest:
    """``sandman login``'s loopback listener: where to hand the one-time code."""

    port: int
    state: str
    challenge: str

    def redirect(self, **params: str) -> str:
        from urllib.parse import urlencode

        query = urlencode({**params, "state": self.state})
        return f"http://127.0.0.1:{self.port}/callback?{query}"


def check_cli(port: int | None, state: str | None, challenge: str | None) -> CliRequest | None:
    if port is None and state is None and challenge is None:
        return None
    if port is None or not 1024 <= port <= 65535:
        raise InvalidRequest("cli_port must be a port from 1024 to 65535")
    if state is None or not CLI_STATE.fullmatch(state):
        raise InvalidRequest("cli_state must be 16-128 characters of [A-Za-z0-9_-]")
    if challenge is None or not CLI_CHALLENGE.fullmatch(challenge):
        raise InvalidRequest("cli_challenge must be the base64url SHA-256 of the CLI's verifier")
    return CliRequest(port, state, challenge)


def challenge_of(verifier: str) -> str:
    """The S256 challenge of a verifier (as PKCE computes it)."""
    import hashlib

    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_name(hostname: str) -> str:
    """The name of a token ``sandman login`` gets: ``cli@<host>``, fit for a name."""
    host = "".join(c for c in hostname if c.isprintable())[:60] or "unknown"
    return f"cli@{host}"


# -- the login in progress ------------------------------------------------------
@dataclass(frozen=True)
class Flow:
    """What ``/auth/callback`` needs from ``/auth/login``: kept in the browser, sealed."""

    state: str
    nonce: str
    verifier: str
    next: str
    expires: float
    cli: CliRequest | None = None


def seal(flow: Flow, key: bytes) -> str:
    """The flow encrypted and authenticated (AES-GCM) with the deployment's key: the
    browser holds it but can neither read the verifier nor change where it lands,
    and any Sandman process sharing the database can open it."""
    body = json.dumps(
        {
            "s": flow.state,
            "n": flow.nonce,
            "v": flow.verifier,
            "x": flow.next,
            "e": flow.expires,
            "c": [flow.cli.port, flow.cli.state, flow.cli.challenge] if flow.cli else None,
        },
        separators=(",", ":"),
    ).encode()
    iv = os.urandom(12)
    sealed = iv + AESGCM(key).encrypt(iv, body, b"sandman-oidc-flow")
    return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()


def unseal(value: str | None, key: bytes, now: float) -> Flow:
    """The flow of a sealed cookie; 400 when it is missing, forged or too old."""
    again = "start again at /auth/login"
    if not value:
        raise FlowExpired(f"no login is in progress in this browser; {again}")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        body = json.loads(AESGCM(key).decrypt(raw[:12], raw[12:], b"sandman-oidc-flow"))
        cli = CliRequest(*body["c"]) if body["c"] else None
        flow = Flow(body["s"], body["n"], body["v"], body["x"], float(body["e"]), cli)
    except (InvalidTag, ValueError, KeyError, TypeError):
        raise FlowExpired(f"this login cannot be finished; {again}") from None
    if flow.expires <= now:
        raise FlowExpired(f"this login took too long; {again}")
    return flow


class FlowExpired(InvalidRequest):
    """The callback has no usable login in progress (400)."""


class ProviderError(SandmanError):
    """The identity provider failed or sent something that does not verify (500): the
    message says which; the log has the details."""
