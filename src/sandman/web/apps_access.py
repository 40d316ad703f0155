"""Who gets through the apps origin: the one-time handshake and the origin's own login.

JupyterLab and VS Code run code the user controls in the browser, so they live on
an origin of their own (``SANDMAN_APPS_URL``) and never see the portal's cookie.
The portal hands a browser across with a **one-time code** (JupyterHub's subdomain
mode is the model): ``mint`` makes one for (user, session, app), valid for a
minute and kept only as a SHA-256; the apps origin's ``/_open`` trades it, once,
for a login of its own (``exchange``), whose secret is the origin's cookie.

A request on the apps origin carries that cookie or a bearer token (a personal
token, or the admin token); ``authorize`` then asks the accounts policy whether
the caller may use the session's apps (``may_use_apps``: the owner, and admins
when ``apps_admin_access``) and answers 404 otherwise, as for an unknown id.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.engine import CursorResult

from sandman.accounts import epoch
from sandman.accounts.directory import Directory
from sandman.accounts.policy import BOOTSTRAP, Caller, Scope, Target, may_use_apps
from sandman.accounts.tokens import TOKEN_PREFIX, Credentials, digest
from sandman.domain import SessionStatus
from sandman.environments.apps import APPS, App
from sandman.errors import InvalidRequest, NotFound, Unauthorized
from sandman.store.database import Database
from sandman.store.models import AppsCode, AppsLogin, User, utcnow
from sandman.store.models import Session as SessionRow

CODE_TTL = timedelta(seconds=60)
COOKIE = "sandman_apps"
SESSION_CACHE_S = 5.0  # how long what a session is (owner, address) is kept per process
CACHE_SIZE = 10_000


@dataclass(frozen=True)
class AppsSession:
    """What the proxy needs of a session: whose it is and where its container is."""

    id: str
    owner: str
    team: str | None
    running: bool
    container: str  # the runtime's id (or name) of its container
    address: str | None  # on the session network
    user: str | None  # "uid:gid" the apps run as


@dataclass(frozen=True)
class Opened:
    """What a one-time code opened: a login on the apps origin and where to go."""

    user_id: str
    session_id: str
    app: App
    secret: str  # the apps origin's cookie
    expires_at: datetime


@dataclass
class _Login:
    caller: Caller
    expires_at: datetime
    epoch: str


def find_app(name: str) -> App:
    """An app by its API name (``jupyterlab``, ``vscode``); 404 for any other."""
    app = APPS.get(name)
    if app is None:
        raise NotFound(f"no app {name!r}: Sandman knows {', '.join(sorted(APPS))}")
    return app


class AppsAccess:
    """Codes, logins and the access decision of the apps origin (the database holds
    codes and logins, so any number of processes can serve either origin)."""

    def __init__(
        self,
        db: Database,
        directory: Directory,
        credentials: Credentials,
        admin_token: str,
        login_ttl: timedelta,
        admins_allowed: bool,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.directory = directory
        self.credentials = credentials
        self.admin_token = admin_token
        self.login_ttl = login_ttl
        self.admins_allowed = admins_allowed
        self.clock = clock
        self.session_cache_s = SESSION_CACHE_S
        self._logins: dict[str, _Login] = {}
        self._sessions: dict[str, tuple[float, AppsSession | None]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------- the handshake
    def mint(self, caller: Caller, session_id: str, app_name: str) -> str:
        """A one-time code that opens ``app_name`` of the session for the caller.

        Refused as ``authorize`` refuses (404), and with 404 for an app Sandman does
        not know; whether the environment offers it is the apps origin's to say."""
        app = find_app(app_name)
        session = self.authorize(caller, session_id)
        if caller.user_id is None:
            raise InvalidRequest(
                "the admin token belongs to no user: open apps with a personal token or a login"
            )
        code = secrets.token_urlsafe(32)
        now = self.clock()
        with self.db.transaction() as db:
            db.execute(delete(AppsCode).where(AppsCode.expires_at <= now))
            db.add(
                AppsCode(
                    code_hash=digest(code),
                    user_id=caller.user_id,
                    session_id=session.id,
                    app=app.name,
                    created_at=now,
                    expires_at=now + CODE_TTL,
                )
            )
        return code

    def exchange(self, code: str) -> Opened:
        """A login on the apps origin for a code: used once, within ``CODE_TTL``, and
        only while its user is active. Whoever comes second gets 401."""
        now = self.clock()
        with self.db.transaction() as db:
            row = db.get(AppsCode, digest(code))
            used = None
            if row is not None:
                # Used, whatever follows; of two exchanges at once, one deletes it.
                result: CursorResult[Any] = db.execute(  # type: ignore[assignment]
                    delete(AppsCode).where(AppsCode.code_hash == row.code_hash)
                )
                if result.rowcount == 1:
                    used = (row.user_id, row.session_id, row.app, row.expires_at)
        if used is None:
            raise Unauthorized("unknown or already used code: open the app from the portal")
        user_id, session_id, app, code_expires = used
        if code_expires <= now:
            raise Unauthorized("the code has expired: open the app from the portal again")
        secret = secrets.token_urlsafe(32)
        expires_at = now + self.login_ttl
        with self.db.transaction() as db:
            user = db.get(User, user_id)
            if user is None or user.status != "active":
                raise Unauthorized(f"user {user_id} is disabled")
            db.execute(delete(AppsLogin).where(AppsLogin.expires_at <= now))
            db.add(
                AppsLogin(
                    secret_hash=digest(secret),
                    user_id=user_id,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        return Opened(user_id, session_id, APPS[app], secret, expires_at)

    def end_logins(self, user_id: str) -> int:
        """End every apps login (and unused code) of ``user_id``: logging out of the
        portal ends the apps origin's logins too. An apps login does not record which
        portal login opened it, so all of the user's go. The epoch moves with it, so
        each process's cache checks again and finds them gone."""
        with self.db.transaction() as db:
            db.execute(delete(AppsCode).where(AppsCode.user_id == user_id))
            result: CursorResult[Any] = db.execute(  # type: ignore[assignment]
                delete(AppsLogin).where(AppsLogin.user_id == user_id)
            )
            epoch.bump(db)
        with self._lock:
            for key in [k for k, v in self._logins.items() if v.caller.user_id == user_id]:
                del self._logins[key]
        return int(result.rowcount or 0)

    # ------------------------------------------------------------------ callers
    def caller(self, bearer: str | None, cookie: str | None) -> Caller:
        """Who is calling: a bearer token first, then the apps origin's cookie; 401
        without either (the portal's own login cookie never counts here)."""
        if bearer is not None:
            if hmac.compare_digest(bearer.encode(), self.admin_token.encode()):
                return BOOTSTRAP
            if bearer.startswith(TOKEN_PREFIX):
                return self.credentials.check_token(bearer)
            raise Unauthorized("wrong token: use a personal token (sm_...)")
        if cookie:
            return self._login(cookie)
        raise Unauthorized(
            "missing credentials: open the app from Sandman's portal, or send "
            "'Authorization: Bearer <token>'"
        )

    def _login(self, secret: str) -> Caller:
        """The caller of an apps login, cached while the accounts epoch stays put (a
        disabled user or a changed role takes effect at once, as for tokens)."""
        key = digest(secret)
        now = self.clock()
        seen = epoch.current(self.db)
        cached = self._logins.get(key)
        if cached is None or cached.epoch != seen:
            with self.db.read() as db:
                row = db.get(AppsLogin, key)
                if row is None:
                    raise Unauthorized("your apps login has expired: open the app from the portal")
                user = db.get(User, row.user_id)
                if user is None or user.status != "active":
                    raise Unauthorized(f"user {row.user_id} is disabled")
                caller = self.directory.caller(db, user, frozenset(Scope), "cookie")
                cached = _Login(caller, row.expires_at, seen)
            with self._lock:
                if len(self._logins) >= CACHE_SIZE:
                    self._logins.clear()
                self._logins[key] = cached
        if cached.expires_at <= now:
            raise Unauthorized("your apps login has expired: open the app from the portal")
        return cached.caller

    # ----------------------------------------------------------------- sessions
    def authorize(self, caller: Caller, session_id: str) -> AppsSession:
        """The session, if the caller may use its apps; 404 otherwise, the same as for
        an id that does not exist, so ids cannot be probed."""
        session = self.session(session_id)
        if (
            session is None
            or not may_use_apps(
                caller, Target(owner=session.owner, team=session.team), self.admins_allowed
            ).allowed
        ):
            raise NotFound(f"no session {session_id!r}")
        return session

    def session(self, session_id: str) -> AppsSession | None:
        """What the proxy needs of a session, read at most every ``SESSION_CACHE_S``."""
        now = time.monotonic()
        found = self._sessions.get(session_id)
        if found is not None and now - found[0] < self.session_cache_s:
            return found[1]
        with self.db.read() as db:
            row = db.get(SessionRow, session_id)
            user = db.get(User, row.user_id) if row is not None else None
            session = (
                AppsSession(
                    id=row.id,
                    owner=row.user_id,
                    team=row.team,
                    running=row.status == SessionStatus.RUNNING,
                    container=row.container_id or row.container_name,
                    address=row.container_ip,
                    user=f"{user.uid}:{user.gid}" if user is not None else None,
                )
                if row is not None
                else None
            )
        with self._lock:
            if len(self._sessions) >= CACHE_SIZE:
                self._sessions.clear()
            self._sessions[session_id] = (now, session)
        return session
