"""The notifier: tells a user (or the admins) something on every channel they chose,
off the request path.

``notify`` and ``notify_admins`` only put a notice on a bounded queue and return
at once; a few worker threads deliver. A full queue drops the new notice with a
warning rather than block the caller (an alert storm must not stall the API or
the idle sweep). Each channel is tried up to ``retries`` times, waiting longer
between tries; a delivery that cannot succeed (a 4xx, a refused recipient) is
not retried. Every delivery, sent or failed, is recorded in the audit trail as
``notification.send``, and a failure is logged, in both cases naming a webhook by
its host only and never a password.

The idle reclaim calls ``notify(user_id, session_id, subject, text)``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sandman.accounts.audit import Entry
from sandman.observe.notify_channels import Notice, redact_url
from sandman.observe.notify_send import DeliveryError, MailSender, TerminalSender, WebhookSender
from sandman.observe.notify_store import NotificationSettings

log = logging.getLogger(__name__)

ACTOR = "sandman"  # the audit trail's actor for what Sandman does by itself
BACKOFF = (1.0, 4.0, 15.0, 30.0)  # seconds before the 2nd, 3rd... try
WORKERS = 2


class AuditSink(Protocol):
    def record(self, entry: Entry) -> object: ...


@dataclass(frozen=True)
class Delivery:
    """What became of one notice on one channel."""

    channel: str  # webhook | email | terminal
    ok: bool
    attempts: int
    detail: str = ""  # the error, or how many terminals; never a secret


SELF_WRITTEN = frozenset({"idle"})  # kinds whose sender writes the terminals itself


class Notifier:
    def __init__(
        self,
        settings: NotificationSettings,
        webhooks: WebhookSender,
        terminals: TerminalSender,
        mail: MailSender | None = None,
        audit: AuditSink | None = None,
        retries: int = 3,
        queue_size: int = 1000,
        sleep: Callable[[float], None] = time.sleep,
        workers: int = WORKERS,
    ) -> None:
        self.settings = settings
        self.webhooks = webhooks
        self.terminals = terminals
        self.mail = mail
        self.audit = audit
        self.retries = retries
        self.sleep = sleep
        self.dropped = 0
        self._queue: queue.Queue[Notice | None] = queue.Queue(maxsize=queue_size)
        self._workers = workers
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # -- what callers use ----------------------------------------------------------
    def notify(
        self,
        user_id: str,
        session_id: str | None,
        subject: str,
        text: str,
        severity: str = "warning",
        kind: str = "message",
    ) -> bool:
        """Tell ``user_id`` (about ``session_id``, whose terminals may show it); False
        when the queue was full and the notice was dropped."""
        return self.submit(Notice(subject, text, user_id, session_id, severity, kind))

    def notify_admins(
        self, subject: str, text: str, severity: str = "warning", kind: str = "message"
    ) -> bool:
        """Tell the admins, on the channel of the notification defaults."""
        return self.submit(Notice(subject, text, None, None, severity, kind))

    def submit(self, notice: Notice) -> bool:
        self.start()
        try:
            self._queue.put_nowait(notice)
        except queue.Full:
            with self._lock:
                self.dropped += 1
            log.warning("notification queue full: dropped %r for %s", notice.kind, notice.audience)
            return False
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued notice was delivered or given up on (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    # -- workers -------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._threads:
                return
            for number in range(self._workers):
                thread = threading.Thread(
                    target=self._work, name=f"sandman-notify-{number}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (for up to ``timeout``), then stop the workers."""
        with self._lock:
            threads, self._threads = self._threads, []
        self.flush(timeout)
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join(timeout=timeout)

    def _work(self) -> None:
        while True:
            notice = self._queue.get()
            try:
                if notice is None:
                    return
                self.deliver(notice)
            except Exception:
                log.exception("delivering a notification failed")
            finally:
                self._queue.task_done()

    # -- delivery ------------------------------------------------------------------
    def deliver(self, notice: Notice) -> list[Delivery]:
        """Send ``notice`` on every channel its audience chose, now (a worker calls it)."""
        channels = self.settings.for_delivery(notice.user_id)
        done: list[Delivery] = []
        # Idle warnings are written to the terminals by the idle sweep itself.
        if channels.terminal and notice.session_id is not None and notice.kind not in SELF_WRITTEN:
            done.append(self._try("terminal", notice, lambda: self._terminal(notice), ""))
        if channels.webhook is not None:
            hook = channels.webhook
            done.append(
                self._try(
                    "webhook",
                    notice,
                    lambda: self.webhooks.send(hook, notice),
                    redact_url(hook.url),
                )
            )
        if channels.email is not None:
            to = channels.email
            if self.mail is None:
                log.debug("no SMTP server set: no e-mail to %s", notice.audience)
            else:
                mail = self.mail
                done.append(self._try("email", notice, lambda: mail.send(to, notice), to))
        return done

    def _terminal(self, notice: Notice) -> str:
        return f"{self.terminals.send(notice)} terminal(s)"

    def _try(self, channel: str, notice: Notice, send: Callable[[], Any], to: str) -> Delivery:
        attempts = 0
        error = ""
        while attempts < self.retries:
            if attempts:
                self.sleep(BACKOFF[min(attempts - 1, len(BACKOFF) - 1)])
            attempts += 1
            try:
                result = send()
            except DeliveryError as exc:
                error = exc.message
                if not exc.retry:
                    break
                continue
            delivery = Delivery(channel, True, attempts, str(result or ""))
            self._record(notice, delivery, to)
            return delivery
        log.warning(
            "could not send %r to %s by %s after %d tries: %s",
            notice.kind,
            notice.audience,
            channel,
            attempts,
            error,
        )
        delivery = Delivery(channel, False, attempts, error)
        self._record(notice, delivery, to)
        return delivery

    def _record(self, notice: Notice, delivery: Delivery, to: str) -> None:
        if self.audit is None:
            return
        detail: dict[str, Any] = {
            "channel": delivery.channel,
            "kind": notice.kind,
            "subject": notice.subject[:200],
            "attempts": delivery.attempts,
        }
        if to:
            detail["to"] = to  # a webhook only as its host (redact_url)
        if notice.session_id:
            detail["session"] = notice.session_id
        if delivery.detail:
            detail["note" if delivery.ok else "error"] = delivery.detail[:300]
        try:
            self.audit.record(
                Entry(
                    actor=ACTOR,
                    action="notification.send",
                    target=notice.audience,
                    result="ok" if delivery.ok else "failed",
                    detail=detail,
                )
            )
        except Exception:
            log.exception("could not record the notification to %s", notice.audience)
