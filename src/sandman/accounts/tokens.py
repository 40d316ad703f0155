"""Personal API tokens and browser logins: random secrets, kept only as SHA-256.

A token is 256 random bits, so a fast hash is enough (no salt or stretching: there
is nothing to guess). Checking a credential is one indexed read; ``last_used_at``
is written at most once a minute, so a busy script costs no write per request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update

from sandman.accounts import epoch
from sandman.accounts.directory import SEEN_EVERY, Directory
from sandman.accounts.policy import Caller, Scope
from sandman.domain import validate_user_id
from sandman.errors import Conflict, InvalidRequest, NotFound, Unauthorized
from sandman.store.database import Database
from sandman.store.models import ApiToken, User, WebLogin, utcnow

TOKEN_PREFIX = "sm_"
SHOWN_PREFIX = 10  # characters of a token listed to recognise it ("sm_" and 7 more)
MAX_TOKEN_DAYS = 3650
CACHE_SIZE = 10_000
NEVER = datetime(1970, 1, 1, tzinfo=UTC)
TOKEN_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class TokenView:
    id: str
    user_id: str
    name: str
    prefix: str
    scopes: list[str]
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


def _view(row: ApiToken) -> TokenView:
    return TokenView(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        prefix=row.prefix,
        scopes=list(row.scopes),
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


@dataclass
class _Cached:
    """What a credential stood for at an epoch (``id``: a token's id, a login's CSRF)."""

    id: str
    name: str
    caller: Caller
    expires_at: datetime | None
    used_at: datetime  # when this process last recorded a use
    epoch: str
    is_token: bool = True


@dataclass(frozen=True)
class Login:
    """A browser login: the cookie's secret (shown once) and its CSRF token."""

    secret: str
    csrf_token: str
    expires_at: datetime


class Credentials:
    """Issues, lists, revokes and checks tokens and browser logins."""

    def __init__(self, db: Database, directory: Directory, login_ttl: timedelta) -> None:
        self.db = db
        self.directory = directory
        self.login_ttl = login_ttl
        self._cache: dict[str, _Cached] = {}  # secret hash -> what it stands for

    # -- tokens --------------------------------------------------------------------
    def create_token(
        self,
        owner: str,
        name: str,
        scopes: frozenset[Scope],
        expires_in_days: int | None,
        created_by: str,
    ) -> tuple[TokenView, str]:
        if not TOKEN_NAME.fullmatch(name):
            raise InvalidRequest("token name: 1-64 characters, no control characters")
        if expires_in_days is not None and not 1 <= expires_in_days <= MAX_TOKEN_DAYS:
            raise InvalidRequest(f"expires_in_days: 1 to {MAX_TOKEN_DAYS}")
        now = utcnow()
        secret = new_secret()
        with self.db.transaction() as db:
            user = db.get(User, validate_user_id(owner))
            if user is None:
                raise NotFound(f"no user {owner!r}")
            if user.status != "active":
                raise Conflict(f"user {owner} is disabled; enable them first")
            row = ApiToken(
                id=uuid.uuid4().hex[:16],
                user_id=owner,
                name=name,
                prefix=secret[:SHOWN_PREFIX],
                secret_hash=digest(secret),
                scopes=sorted(s.value for s in scopes),
                created_by=created_by,
                created_at=now,
                expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
            )
            db.add(row)
            db.flush()
            return _view(row), secret

    def list_tokens(self, owner: str | None) -> list[TokenView]:
        query = select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)
        if owner is not None:
            query = query.where(ApiToken.user_id == owner)
        with self.db.read() as db:
            return [_view(row) for row in db.scalars(query)]

    def token(self, token_id: str) -> TokenView:
        with self.db.read() as db:
            row = db.get(ApiToken, token_id)
            if row is None:
                raise NotFound(f"no token {token_id!r}")
            return _view(row)

    def revoke(self, token_id: str) -> TokenView:
        with self.db.transaction() as db:
            row = db.get(ApiToken, token_id)
            if row is None:
                raise NotFound(f"no token {token_id!r}")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                epoch.bump(db)
            return _view(row)

    def check_token(self, secret: str) -> Caller:
        """The caller a token stands for; 401 if unknown, revoked, expired or disabled.

        What a token stands for is cached while the accounts epoch stays put (see
        ``epoch``): a revocation anywhere moves it, so it still takes effect at once.
        """
        key = digest(secret)
        now = utcnow()
        seen_epoch = epoch.current(self.db)
        cached = self._cache.get(key)
        if cached is None or cached.epoch != seen_epoch:
            cached = self._load_token(key, seen_epoch)
        if cached.expires_at is not None and cached.expires_at <= now:
            raise Unauthorized(f"token {cached.name} has expired")
        self._note_use(cached, now)
        return cached.caller

    def _note_use(self, cached: _Cached, now: datetime) -> None:
        """``last_seen_at`` (and a token's ``last_used_at``), at most once a minute per
        credential in this process: no write per request."""
        if now - cached.used_at < SEEN_EVERY:
            return
        cached.used_at = now
        with self.db.transaction() as db:
            if cached.is_token:
                db.execute(
                    update(ApiToken).where(ApiToken.id == cached.id).values(last_used_at=now)
                )
            db.execute(
                update(User).where(User.user_id == cached.caller.user_id).values(last_seen_at=now)
            )

    def _load_token(self, key: str, seen_epoch: str) -> _Cached:
        with self.db.read() as db:
            row = db.scalar(select(ApiToken).where(ApiToken.secret_hash == key))
            if row is None:
                raise Unauthorized("unknown token")
            if row.revoked_at is not None:
                raise Unauthorized(f"token {row.name} ({row.prefix}...) was revoked")
            user = db.get(User, row.user_id)
            if user is None or user.status != "active":
                raise Unauthorized(f"user {row.user_id} is disabled")
            caller = self.directory.caller(
                db, user, frozenset(Scope(s) for s in row.scopes), "token", row.name
            )
            used = row.last_used_at or NEVER
            entry = _Cached(row.id, row.name, caller, row.expires_at, used, seen_epoch)
        self._remember(key, entry)
        return entry

    def _remember(self, key: str, entry: _Cached) -> None:
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = entry

    # -- browser logins ------------------------------------------------------------
    def create_login(self, user_id: str) -> Login:
        now = utcnow()
        login = Login(secrets.token_urlsafe(32), secrets.token_urlsafe(24), now + self.login_ttl)
        with self.db.transaction() as db:
            db.execute(delete(WebLogin).where(WebLogin.expires_at <= now))
            db.add(
                WebLogin(
                    secret_hash=digest(login.secret),
                    user_id=user_id,
                    csrf_token=login.csrf_token,
                    created_at=now,
                    expires_at=login.expires_at,
                )
            )
        return login

    def login_with_token(self, secret: str) -> Login:
        """A browser login for a personal token pasted into the portal's form: the same
        kind of cookie single sign-on sets. A login has its owner's whole role, so a
        token limited to fewer scopes cannot be traded for one."""
        if not secret.startswith(TOKEN_PREFIX):
            raise Unauthorized("not a personal token (they start with sm_)")
        caller = self.check_token(secret)
        if caller.user_id is None or Scope.ADMIN not in caller.scopes:
            raise Unauthorized(
                "this token is limited to some scopes; log in with a token of scope admin "
                "(the default) or through single sign-on"
            )
        return self.create_login(caller.user_id)

    def check_login(self, secret: str) -> tuple[Caller, str]:
        """The caller of a login cookie and its CSRF token; 401 if unknown or expired."""
        key = digest(secret)
        now = utcnow()
        seen_epoch = epoch.current(self.db)
        cached = self._cache.get(key)
        if cached is None or cached.epoch != seen_epoch:
            with self.db.read() as db:
                row = db.get(WebLogin, key)
                if row is None:
                    raise Unauthorized("your login has expired; log in again at /auth/login")
                user = db.get(User, row.user_id)
                if user is None or user.status != "active":
                    raise Unauthorized(f"user {row.user_id} is disabled")
                caller = self.directory.caller(db, user, frozenset(Scope), "cookie")
                cached = _Cached(
                    row.csrf_token, "login", caller, row.expires_at, NEVER, seen_epoch, False
                )
            self._remember(key, cached)
        if cached.expires_at is not None and cached.expires_at <= now:
            raise Unauthorized("your login has expired; log in again at /auth/login")
        self._note_use(cached, now)
        return cached.caller, cached.id

    def end_login(self, secret: str) -> None:
        with self.db.transaction() as db:
            db.execute(delete(WebLogin).where(WebLogin.secret_hash == digest(secret)))
            epoch.bump(db)


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())
