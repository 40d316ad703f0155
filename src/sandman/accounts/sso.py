"""Single sign-on: Sandman as an OpenID Connect relying party.

``begin`` starts a login (the provider's URL and the sealed flow the browser keeps),
``finish`` turns the provider's answer into an account (bound to ``(iss, sub)``,
created at the first login, its role and teams from the group map) and either a
browser login or, for ``sandman login``, a one-time code the CLI exchanges for a
personal token (``exchange``), so no token ever travels in a URL.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as Db

from sandman.accounts import epoch
from sandman.accounts.audit import Entry
from sandman.accounts.directory import check_email, memberships
from sandman.accounts.oidc import (
    Account,
    CliRequest,
    Flow,
    FlowExpired,
    GroupMap,
    LoginRefused,
    challenge_of,
    check_next,
    choose_account,
    derive_user_id,
    grants,
    groups_of,
    load_group_map,
    membership_changes,
    seal,
    token_name,
    unseal,
)
from sandman.accounts.oidc_client import Identity, OidcClient
from sandman.accounts.policy import Scope
from sandman.accounts.teams import ensure_team
from sandman.accounts.tokens import Login, TokenView, digest, same_secret
from sandman.errors import ConfigurationError, InvalidRequest
from sandman.store.models import CliLoginCode, Meta, TeamMember, User, utcnow

if TYPE_CHECKING:
    from sandman.accounts.service import Accounts
    from sandman.config import Settings

log = logging.getLogger(__name__)

FLOW_TTL = 600  # seconds a person has to log in at the provider
CLI_CODE_TTL = timedelta(minutes=2)
CLI_TOKEN_DAYS = 30
FLOW_KEY = "oidc_flow_key"  # meta row: the AES key sealing flows, shared by all processes


@dataclass(frozen=True)
class Finished:
    """Where the browser goes next, and the login to set when it is a browser's."""

    user_id: str
    redirect: str
    login: Login | None = None


@dataclass(frozen=True)
class CliToken:
    view: TokenView
    secret: str


def flow_key(accounts: Accounts) -> bytes:
    """The deployment's key for sealing flows: made once, kept in the database, so
    every Sandman process on it opens the flows the others started."""
    for _ in range(2):
        try:
            with accounts.db.transaction() as db:
                row = db.get(Meta, FLOW_KEY)
                if row is None:
                    row = Meta(key=FLOW_KEY, value=secrets.token_hex(32))
                    db.add(row)
                return bytes.fromhex(row.value)
        except IntegrityError:  # another process made it first: read theirs
            continue
    raise ConfigurationError("could not create the single sign-on key")


class SingleSignOn:
    def __init__(
        self,
        accounts: Accounts,
        client: OidcClient,
        group_map: GroupMap,
        username_claim: str,
        groups_claim: str,
        secure_cookies: bool,
    ) -> None:
        self.accounts = accounts
        self.client = client
        self.group_map = group_map
        self.username_claim = username_claim
        self.groups_claim = groups_claim
        self.secure_cookies = secure_cookies
        self._key = flow_key(accounts)

    @classmethod
    def from_settings(cls, settings: Settings, accounts: Accounts) -> SingleSignOn | None:
        """Single sign-on as configured, or None when no issuer is set; settings that
        cannot work are refused at start-up (``ConfigurationError``)."""
        if not settings.oidc_issuer:
            if settings.oidc_group_map is not None or settings.oidc_client_id:
                raise ConfigurationError(
                    "SANDMAN_OIDC_CLIENT_ID and SANDMAN_OIDC_GROUP_MAP need SANDMAN_OIDC_ISSUER"
                )
            return None
        if not settings.oidc_client_id:
            raise ConfigurationError("single sign-on needs SANDMAN_OIDC_CLIENT_ID")
        public = urlsplit(settings.public_url or "")
        if public.scheme not in ("http", "https") or not public.netloc:
            raise ConfigurationError(
                "single sign-on needs SANDMAN_PUBLIC_URL, Sandman's address as browsers "
                "reach it (https://gpu.example.org): the provider redirects to "
                "<public_url>/auth/callback"
            )
        issuer = urlsplit(settings.oidc_issuer)
        if issuer.scheme not in ("http", "https") or not issuer.netloc:
            raise ConfigurationError("SANDMAN_OIDC_ISSUER must be the provider's http(s) URL")
        if public.scheme == "http" and public.hostname not in ("127.0.0.1", "localhost", "::1"):
            log.warning(
                "SANDMAN_PUBLIC_URL is http: login cookies are not marked Secure; "
                "serve Sandman over https"
            )
        secret = settings.oidc_client_secret
        client = OidcClient(
            settings.oidc_issuer,
            settings.oidc_client_id,
            secret.get_secret_value() if secret is not None else None,
            settings.oidc_scopes,
            f"{(settings.public_url or '').rstrip('/')}/auth/callback",
        )
        return cls(
            accounts,
            client,
            load_group_map(settings.oidc_group_map),
            settings.oidc_username_claim,
            settings.oidc_groups_claim,
            secure_cookies=public.scheme == "https",
        )

    # -- the flow ------------------------------------------------------------------
    async def begin(self, next_path: str | None, cli: CliRequest | None) -> tuple[str, str]:
        """The provider's authorization URL and the sealed flow for the browser."""
        if cli is not None and next_path:
            raise InvalidRequest("a login for the CLI (cli_port) takes no next")
        flow = Flow(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(48),
            next=check_next(next_path),
            expires=self.client.clock() + FLOW_TTL,
            cli=cli,
        )
        url = await self.client.authorization_url(flow.state, flow.nonce, flow.verifier)
        return url, seal(flow, self._key)

    def open_flow(self, sealed: str | None, state: str | None) -> Flow:
        """The flow this browser started, if the provider's ``state`` is its own (a
        callback URL made in another browser logs no one in here)."""
        flow = unseal(sealed, self._key, self.client.clock())
        if not state or not same_secret(state, flow.state):
            raise FlowExpired(
                "this login was started in another browser or tab; start again at /auth/login"
            )
        return flow

    async def finish(
        self,
        flow: Flow,
        code: str | None,
        error: str | None,
        error_description: str | None,
        source: str | None,
        request_id: str | None,
    ) -> Finished:
        if error is not None:
            reason = f"{error}: {error_description}" if error_description else error
            raise LoginRefused(f"the identity provider did not log you in ({reason})")
        if not code:
            raise InvalidRequest("the provider's answer has no code")
        identity = await self.client.identity(code, flow.verifier, flow.nonce)
        return await asyncio.to_thread(self._admit, identity, flow, source, request_id)

    def _admit(
        self, identity: Identity, flow: Flow, source: str | None, request_id: str | None
    ) -> Finished:
        claimed = identity.claims.get(self.username_claim)
        detail: dict[str, Any] = {"via": "oidc", "issuer": identity.issuer}
        if flow.cli is not None:
            detail["cli"] = True
        try:
            user_id, how = self.sign_in(identity)
        except LoginRefused as exc:
            actor = exc.user_id or (claimed if isinstance(claimed, str) else None)
            self.accounts.audit.record(
                Entry(
                    actor=actor or f"oidc:{identity.subject}",
                    action="auth.login",
                    target=exc.user_id,
                    result="refused",
                    source=source,
                    request_id=request_id,
                    detail={**detail, "subject": identity.subject, "reason": exc.message},
                )
            )
            raise
        detail.update(how)
        self.accounts.audit.record(
            Entry(
                actor=user_id,
                action="auth.login",
                target=user_id,
                source=source,
                request_id=request_id,
                detail=detail,
            )
        )
        if flow.cli is not None:
            code = self._cli_code(user_id, flow.cli.challenge)
            return Finished(user_id, flow.cli.redirect(code=code))
        login = self.accounts.credentials.create_login(user_id)
        return Finished(user_id, flow.next, login)

    # -- accounts ------------------------------------------------------------------
    def sign_in(self, identity: Identity) -> tuple[str, dict[str, Any]]:
        """The account of a verified identity, created or bound as needed and brought
        in line with the group map; ``LoginRefused`` when it may not log in."""
        try:
            return self._sign_in(identity)
        except IntegrityError:
            # Two first logins at once (two tabs): the other bound the account; the
            # second try finds it.
            return self._sign_in(identity)

    def _sign_in(self, identity: Identity) -> tuple[str, dict[str, Any]]:
        claims = identity.claims
        with self.accounts.db.transaction() as db:
            bound = db.scalar(
                select(User).where(
                    User.oidc_issuer == identity.issuer, User.oidc_subject == identity.subject
                )
            )
            claimed, user_id, named = None, None, None
            if bound is None:
                raw = claims.get(self.username_claim)
                user_id = derive_user_id(raw, self.username_claim)
                claimed = str(raw)
                named = db.get(User, user_id)
            binding = choose_account(
                identity.issuer,
                identity.subject,
                claimed,
                user_id,
                _account(bound),
                _account(named),
            )
            user = bound or named or self.accounts.directory.ensure(db, binding.user_id)
            if binding.create or binding.bind:
                user.oidc_issuer, user.oidc_subject = identity.issuer, identity.subject
            self._fill_profile(user, claims)
            changed = self._apply_groups(db, user, groups_of(claims, self.groups_claim))
            user.last_seen_at = utcnow()
            db.flush()
            how: dict[str, Any] = {"created": binding.create, "bound": binding.bind}
            if changed:
                how["granted"] = changed
            return user.user_id, how

    def _fill_profile(self, user: User, claims: dict[str, Any]) -> None:
        """Name and e-mail from the provider where the account has none (a person's own
        later change through the API is kept)."""
        name = claims.get("name")
        if user.display_name is None and isinstance(name, str) and name.strip():
            user.display_name = name.strip()[:128]
        email = claims.get("email")
        if user.email is None and isinstance(email, str):
            try:
                user.email = check_email(email)
            except InvalidRequest:
                log.info("ignoring the provider's e-mail %r for %s", email, user.user_id)

    def _apply_groups(self, db: Db, user: User, groups: list[str]) -> dict[str, str]:
        """The group map at this login: the role when the map decides roles, and the
        memberships added or raised to lead (never removed)."""
        granted = grants(self.group_map, groups)
        changed: dict[str, str] = {}
        if granted.role is not None and user.role != granted.role.value:
            changed["role"] = granted.role.value
            user.role = granted.role.value
        current = memberships(db, user.user_id)
        for team, membership in membership_changes(current, granted.teams).items():
            ensure_team(db, team)
            row = db.get(TeamMember, (team, user.user_id))
            if row is None:
                db.add(TeamMember(team=team, user_id=user.user_id, role=membership))
            else:
                row.role = membership
            changed[f"team {team}"] = membership
        if changed:
            epoch.bump(db)  # cached callers of this user's credentials are stale now
        return changed

    # -- the CLI's one-time code ---------------------------------------------------
    def _cli_code(self, user_id: str, challenge: str) -> str:
        code = secrets.token_urlsafe(32)
        now = utcnow()
        with self.accounts.db.transaction() as db:
            db.execute(delete(CliLoginCode).where(CliLoginCode.expires_at <= now))
            db.add(
                CliLoginCode(
                    code_hash=digest(code),
                    user_id=user_id,
                    challenge=challenge,
                    created_at=now,
                    expires_at=now + CLI_CODE_TTL,
                )
            )
        return code

    def exchange(self, code: str, verifier: str, hostname: str, source: str | None) -> CliToken:
        """The token for a one-time code: used once, within two minutes, and only by
        whoever holds the verifier whose challenge started the login."""
        found: tuple[str, str, datetime] | None = None
        with self.accounts.db.transaction() as db:
            row = db.get(CliLoginCode, digest(code))
            if row is not None:
                # Used, whatever follows; of two exchanges at once, one deletes it.
                result: CursorResult[Any] = db.execute(  # type: ignore[assignment]
                    delete(CliLoginCode).where(CliLoginCode.code_hash == row.code_hash)
                )
                if result.rowcount == 1:
                    found = (row.user_id, row.challenge, row.expires_at)
        if found is None:
            raise InvalidRequest("unknown or already used login code: run sandman login again")
        user_id, challenge, expires_at = found
        if expires_at <= utcnow():
            raise InvalidRequest("the login code has expired: run sandman login again")
        if not same_secret(challenge_of(verifier), challenge):
            raise InvalidRequest("the verifier does not match the login's challenge")
        view, secret = self.accounts.credentials.create_token(
            user_id, token_name(hostname), frozenset(Scope), CLI_TOKEN_DAYS, created_by=user_id
        )
        self.accounts.audit.record(
            Entry(
                actor=user_id,
                action="token.create",
                target=view.id,
                source=source,
                detail={"via": "sandman login", "name": view.name},
            )
        )
        return CliToken(view, secret)


def _account(user: User | None) -> Account | None:
    if user is None:
        return None
    return Account(user.user_id, user.status, user.oidc_issuer, user.oidc_subject)
