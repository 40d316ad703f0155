"""Who gets notified where: each user's own channels, and the defaults an admin sets.

One table (``notification_channels``) holds a row per user who chose their
channels, and two rows of defaults: ``@admins``, where alerts that concern no
session go (a webhook and an address), and ``@users``, what a user who chose
nothing gets (terminal messages, e-mail to their account's address, and maybe a
shared webhook). Until an admin says otherwise a user gets terminal messages
and e-mail to their account's address.

A webhook URL is kept as given but never answered: reads show ``redact_url``.
A write that sends that redacted form back keeps the stored URL, so a client can
read, change the e-mail and write back without knowing the secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy.orm import Session as Db

from sandman.accounts.directory import check_email
from sandman.domain import validate_user_id
from sandman.errors import InvalidRequest, NotFound
from sandman.observe.notify_channels import (
    Channels,
    Webhook,
    WebhookFormat,
    check_webhook_url,
    redact_url,
)
from sandman.store.database import Database
from sandman.store.models import NotificationChannel, User, utcnow

ADMINS = "@admins"
USERS = "@users"
ACCOUNT_EMAIL = "account"  # the @users row's e-mail: each user's own address


@dataclass(frozen=True)
class UserDefaults:
    """What a user who chose nothing gets."""

    webhook: Webhook | None = None
    email: bool = True  # e-mail to the account's address
    terminal: bool = True


@dataclass(frozen=True)
class Defaults:
    admins: Channels = field(default_factory=Channels)
    users: UserDefaults = field(default_factory=UserDefaults)


@dataclass(frozen=True)
class UserChannels:
    """A user's channels as they apply now; ``own``: chosen by them, not the defaults."""

    user_id: str
    channels: Channels
    own: bool
    updated_at: datetime | None = None
    updated_by: str | None = None


def shown(channels: Channels) -> Channels:
    """``channels`` as an answer may show them: the webhook URL redacted."""
    if channels.webhook is None:
        return channels
    return replace(
        channels, webhook=replace(channels.webhook, url=redact_url(channels.webhook.url))
    )


def keep_secret(new: Webhook | None, old: Webhook | None) -> Webhook | None:
    """``new``, except that the redacted form of ``old``'s URL stands for ``old``'s URL."""
    if new is not None and old is not None and new.url == redact_url(old.url):
        return Webhook(old.url, new.format)
    return new


def _webhook(row: NotificationChannel) -> Webhook | None:
    if not row.webhook_url:
        return None
    return Webhook(row.webhook_url, WebhookFormat(row.webhook_format or "json"))


def _channels(row: NotificationChannel | None) -> Channels | None:
    if row is None:
        return None
    return Channels(webhook=_webhook(row), email=row.email, terminal=row.terminal)


class NotificationSettings:
    def __init__(self, db: Database, allow_loopback: bool) -> None:
        self.db = db
        self.allow_loopback = allow_loopback

    # -- checks --------------------------------------------------------------------
    def checked(self, channels: Channels) -> Channels:
        """``channels`` with a valid webhook URL and address, or ``InvalidRequest``."""
        if channels.webhook is not None:
            check_webhook_url(channels.webhook.url, self.allow_loopback)
        check_email(channels.email)
        return channels

    # -- users ---------------------------------------------------------------------
    def get_user(self, user_id: str) -> UserChannels:
        """The user's channels as they apply now (their own, or the defaults)."""
        validate_user_id(user_id)
        with self.db.read() as db:
            user = db.get(User, user_id)
            if user is None:
                raise NotFound(f"no user {user_id!r}")
            row = db.get(NotificationChannel, user_id)
            own = _channels(row)
            if row is not None and own is not None:
                return UserChannels(user_id, own, True, row.updated_at, row.updated_by)
            users = self._defaults(db).users
            return UserChannels(
                user_id,
                Channels(
                    webhook=users.webhook,
                    email=user.email if users.email else None,
                    terminal=users.terminal,
                ),
                own=False,
            )

    def set_user(self, user_id: str, channels: Channels, actor: str) -> UserChannels:
        validate_user_id(user_id)
        with self.db.transaction() as db:
            if db.get(User, user_id) is None:
                raise NotFound(f"no user {user_id!r}")
            row = db.get(NotificationChannel, user_id)
            old = _channels(row)
            channels = replace(
                channels, webhook=keep_secret(channels.webhook, old.webhook if old else None)
            )
            self._write(db, user_id, self.checked(channels), actor)
        return self.get_user(user_id)

    def clear_user(self, user_id: str) -> None:
        """Forget the user's own channels: the defaults apply again."""
        validate_user_id(user_id)
        with self.db.transaction() as db:
            if db.get(User, user_id) is None:
                raise NotFound(f"no user {user_id!r}")
            row = db.get(NotificationChannel, user_id)
            if row is not None:
                db.delete(row)

    # -- defaults ------------------------------------------------------------------
    def get_defaults(self) -> Defaults:
        with self.db.read() as db:
            return self._defaults(db)

    def set_defaults(self, defaults: Defaults, actor: str) -> Defaults:
        if defaults.admins.terminal:
            raise InvalidRequest("the admins' channel has no terminal: use a webhook or e-mail")
        with self.db.transaction() as db:
            old = self._defaults(db)
            admins = replace(
                defaults.admins,
                webhook=keep_secret(defaults.admins.webhook, old.admins.webhook),
            )
            users_hook = keep_secret(defaults.users.webhook, old.users.webhook)
            users = Channels(
                webhook=users_hook,
                email=ACCOUNT_EMAIL if defaults.users.email else None,
                terminal=defaults.users.terminal,
            )
            self._write(db, ADMINS, self.checked(admins), actor)
            if users_hook is not None:
                check_webhook_url(users_hook.url, self.allow_loopback)
            self._write(db, USERS, users, actor)
        return self.get_defaults()

    # -- delivery ------------------------------------------------------------------
    def for_delivery(self, user_id: str | None) -> Channels:
        """Where a notice for ``user_id`` (None: the admins) goes, secrets included."""
        if user_id is None:
            return self.get_defaults().admins
        try:
            return self.get_user(user_id).channels
        except NotFound:
            return Channels()

    # -- rows ----------------------------------------------------------------------
    def _defaults(self, db: Db) -> Defaults:
        admins = _channels(db.get(NotificationChannel, ADMINS)) or Channels()
        users_row = db.get(NotificationChannel, USERS)
        users = (
            UserDefaults(
                webhook=_webhook(users_row),
                email=users_row.email == ACCOUNT_EMAIL,
                terminal=users_row.terminal,
            )
            if users_row is not None
            else UserDefaults()
        )
        return Defaults(admins=admins, users=users)

    @staticmethod
    def _write(db: Db, owner: str, channels: Channels, actor: str) -> None:
        row = db.get(NotificationChannel, owner)
        if row is None:
            row = NotificationChannel(owner=owner)
            db.add(row)
        row.webhook_url = channels.webhook.url if channels.webhook else None
        row.webhook_format = channels.webhook.format.value if channels.webhook else None
        row.email = channels.email
        row.terminal = channels.terminal
        row.updated_at = utcnow()
        row.updated_by = actor
