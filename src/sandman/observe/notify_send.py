"""The three ways a notice leaves Sandman: a webhook (HTTP POST of JSON), an e-mail
(the stdlib's ``smtplib``), and the user's open terminals in their session.

Each ``send`` either returns or raises ``DeliveryError``, whose message is safe to
log and audit (a webhook is named by ``redact_url`` only) and which says whether
trying again can help. The notifier does the retrying.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from sandman.errors import SandmanError
from sandman.observe.notify_channels import (
    Notice,
    Webhook,
    email_message,
    encode_body,
    redact_url,
    refused_address,
    webhook_body,
)
from sandman.observe.terminal import write_to_terminals
from sandman.runtime.base import SessionRuntime
from sandman.store.database import Database
from sandman.store.models import Session as SessionRow
from sandman.store.models import User

Resolver = Callable[[str], list[str]]


class DeliveryError(Exception):
    """A delivery failed; ``message`` names no secret, ``retry`` says if another try may help."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retry = retry


def resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to (an address resolves to itself)."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


class WebhookSender:
    def __init__(self, timeout: float, allow_loopback: bool, resolver: Resolver = resolve) -> None:
        self.timeout = timeout
        self.allow_loopback = allow_loopback
        self.resolver = resolver

    def _check_host(self, url: str) -> None:
        """The URL's host, resolved now, is still one a webhook may go to (a name may
        have been pointed at a refused address since it was checked)."""
        shown = redact_url(url)
        host = urlsplit(url).hostname or ""
        try:
            addresses = self.resolver(host)
        except OSError:
            raise DeliveryError(f"{shown}: the host name does not resolve") from None
        for address in addresses:
            why = refused_address(address.split("%")[0], self.allow_loopback)
            if why is not None:
                raise DeliveryError(f"{shown}: refused, it resolves to {why}", retry=False)

    def send(self, hook: Webhook, notice: Notice) -> None:
        shown = redact_url(hook.url)
        self._check_host(hook.url)
        try:
            response = httpx.post(
                hook.url,
                content=encode_body(webhook_body(notice, hook.format)),
                headers={"Content-Type": "application/json", "User-Agent": "Sandman"},
                timeout=self.timeout,
                follow_redirects=False,  # a redirect could lead anywhere: not followed
            )
        except httpx.TimeoutException:
            raise DeliveryError(f"{shown}: no answer within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{shown}: {type(exc).__name__}") from None
        status = response.status_code
        if 200 <= status < 300:
            return
        retry = status >= 500 or status in (408, 425, 429)
        raise DeliveryError(f"{shown}: HTTP {status}", retry=retry)


class MailSender:
    """E-mail through one SMTP server: TLS from the start on port 465, else STARTTLS
    when ``starttls`` (before any login), then a login when a user is set."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        timeout: float,
        user: str | None = None,
        password: str | None = None,
        starttls: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.timeout = timeout
        self.user = user
        self.password = password
        self.starttls = starttls

    def _connect(self) -> smtplib.SMTP:
        if self.port == 465:
            return smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        if self.starttls:
            client.starttls(context=ssl.create_default_context())
        return client

    def send(self, to: str, notice: Notice) -> None:
        where = f"smtp://{self.host}:{self.port}"
        try:
            with self._connect() as client:
                if self.user:
                    client.login(self.user, self.password or "")
                client.send_message(email_message(notice, to, self.sender))
        except smtplib.SMTPRecipientsRefused:
            raise DeliveryError(f"{where} refused the recipient", retry=False) from None
        except smtplib.SMTPAuthenticationError:
            raise DeliveryError(f"{where} refused the login", retry=False) from None
        except smtplib.SMTPResponseException as exc:
            retry = not 500 <= exc.smtp_code < 600
            raise DeliveryError(f"{where}: SMTP {exc.smtp_code}", retry=retry) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{where}: {type(exc).__name__}") from None


class TerminalSender:
    """Writes to the open terminals of a session's user, as that user."""

    def __init__(self, db: Database, runtime: SessionRuntime, timeout: float) -> None:
        self.db = db
        self.runtime = runtime
        self.timeout = timeout

    def send(self, notice: Notice) -> int:
        """How many terminals showed the notice (0: the user has none open)."""
        if notice.session_id is None:
            raise DeliveryError("no session to write to", retry=False)
        with self.db.read() as db:
            session = db.get(SessionRow, notice.session_id)
            user = db.get(User, session.user_id) if session is not None else None
        if session is None or user is None or session.status not in ("starting", "running"):
            raise DeliveryError(f"session {notice.session_id} is not running", retry=False)
        try:
            return write_to_terminals(
                self.runtime,
                session.container_id or session.container_name,
                f"{user.uid}:{user.gid}",
                notice.subject,
                notice.text,
                timeout=self.timeout,
            )
        except SandmanError as exc:
            raise DeliveryError(exc.message) from None
