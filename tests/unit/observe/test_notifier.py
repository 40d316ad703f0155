"""The notifier against real receivers on 127.0.0.1: a webhook server, an SMTP server
(aiosmtpd) and the fake runtime's terminals; retries, what is not retried, a full
queue, and the audit trail that never holds a secret."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import fake_core
from tests.unit.observe.notify_receivers import (
    MailReceiver,
    WebhookReceiver,
    mail_receiver,
    webhook_receiver,
)

from sandman.accounts.directory import UserChanges
from sandman.core import Sandman
from sandman.gpu.types import GpuRequest
from sandman.observe.notify import Notifier
from sandman.observe.notify_channels import Channels, Notice, Webhook, WebhookFormat
from sandman.observe.notify_send import DeliveryError, TerminalSender, WebhookSender
from sandman.observe.notify_store import Defaults, UserDefaults
from sandman.services.requests import SessionRequest

SECRET_PATH = "/services/T0/B0/TOPSECRET"


@pytest.fixture
def hooks() -> Iterator[WebhookReceiver]:
    yield from webhook_receiver()


@pytest.fixture
def mail() -> Iterator[MailReceiver]:
    yield from mail_receiver()


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def core(tmp_path: Path, runtime: FakeRuntime, mail: MailReceiver) -> Iterator[Sandman]:
    core = fake_core(
        tmp_path,
        runtime,
        default_mig_profile=None,
        notify_allow_loopback=True,
        notify_timeout=3,
        smtp_host=mail.host,
        smtp_port=mail.port,
        smtp_starttls=False,
        smtp_from="sandman@example.org",
    )
    core.notifier.sleep = lambda _seconds: None  # retries without waiting
    core.accounts.directory.create("alice", UserChanges(email="alice@example.org"))
    yield core
    core.stop()


def sends(core: Sandman) -> list[dict[str, object]]:
    records = core.audit.query(action="notification.send")
    return [{"target": r.target, "result": r.result, **r.detail} for r in reversed(records)]


def test_every_channel_the_user_chose(
    core: Sandman, runtime: FakeRuntime, hooks: WebhookReceiver, mail: MailReceiver
) -> None:
    session = core.sessions.create(SessionRequest("alice", gpu=GpuRequest(gpu_count=0))).session
    core.notifications.set_user(
        "alice",
        Channels(
            webhook=Webhook(hooks.url + SECRET_PATH, WebhookFormat.SLACK),
            email="alice@example.org",
            terminal=True,
        ),
        actor="alice",
    )
    assert core.notifier.notify("alice", session.id, "Idle GPU", "Your session is idle.")
    assert core.notifier.flush()
    [call] = hooks.wait(1)
    assert call.path == SECRET_PATH
    assert call.body == {"text": "*Idle GPU*\nYour session is idle."}
    assert call.headers["content-type"] == "application/json"
    [(to, message)] = mail.wait(1)
    assert to == ["alice@example.org"]
    assert message["Subject"] == "[Sandman] Idle GPU"
    assert message["From"] == "sandman@example.org"
    assert "Your session is idle." in message.get_payload()
    [(container, argv, user)] = [e for e in runtime.exec_log if e[1][:2] == ["sh", "-c"]]
    uid = core.accounts.directory.get("alice").uid
    assert user == f"{uid}:{uid}" and container == session.container_id
    assert "*** Sandman: Idle GPU ***" in argv[-1]
    audited = sends(core)
    assert {(a["channel"], a["result"]) for a in audited} == {
        ("terminal", "ok"),
        ("webhook", "ok"),
        ("email", "ok"),
    }
    assert "TOPSECRET" not in json.dumps(audited)
    assert all(a["target"] == "alice" and a["session"] == session.id for a in audited)


def test_a_user_who_chose_nothing_gets_the_defaults(core: Sandman, mail: MailReceiver) -> None:
    """Until an admin says otherwise: terminal messages, and mail to the account's address."""
    found = core.notifications.get_user("alice")
    assert not found.own
    assert found.channels == Channels(email="alice@example.org", terminal=True)
    core.notifier.notify("alice", None, "Hello", "No session: no terminal.")
    assert core.notifier.flush()
    [(to, _)] = mail.wait(1)
    assert to == ["alice@example.org"]
    core.notifications.set_defaults(Defaults(users=UserDefaults(email=False)), "admin")
    assert core.notifications.get_user("alice").channels.email is None


def test_admins_hear_on_the_defaults_channel(core: Sandman, hooks: WebhookReceiver) -> None:
    core.notifications.set_defaults(
        Defaults(admins=Channels(webhook=Webhook(hooks.url + "/ops", WebhookFormat.TEAMS))),
        "admin",
    )
    core.notifier.notify_admins("Sandman down", "It is.", severity="critical")
    assert core.notifier.flush()
    [call] = hooks.wait(1)
    assert call.path == "/ops" and call.body["summary"] == "Sandman down"
    assert sends(core)[0]["target"] == "admins"


def test_server_errors_are_retried(core: Sandman, hooks: WebhookReceiver) -> None:
    hooks.statuses = [500, 503]
    core.notifications.set_user("alice", Channels(webhook=Webhook(hooks.url + "/h")), actor="alice")
    [delivery] = core.notifier.deliver(Notice("s", "t", "alice"))
    assert delivery.ok and delivery.attempts == 3
    assert len(hooks.calls) == 3


def test_a_refusal_is_not_retried_and_the_log_keeps_the_secret(
    core: Sandman, hooks: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    hooks.statuses = [404]
    core.notifications.set_user(
        "alice", Channels(webhook=Webhook(hooks.url + SECRET_PATH)), actor="alice"
    )
    with caplog.at_level(logging.WARNING):
        [delivery] = core.notifier.deliver(Notice("s", "t", "alice"))
    assert not delivery.ok and delivery.attempts == 1
    assert "HTTP 404" in delivery.detail
    assert "TOPSECRET" not in caplog.text and "TOPSECRET" not in delivery.detail
    [record] = sends(core)
    assert record["result"] == "failed" and "TOPSECRET" not in json.dumps(record)


def test_an_unreachable_webhook_fails_after_every_try(core: Sandman) -> None:
    from tests.unit.observe.notify_receivers import free_port

    url = f"http://127.0.0.1:{free_port()}{SECRET_PATH}"
    core.notifications.set_user("alice", Channels(webhook=Webhook(url)), actor="alice")
    [delivery] = core.notifier.deliver(Notice("s", "t", "alice"))
    assert not delivery.ok and delivery.attempts == core.settings.notify_retries
    assert "TOPSECRET" not in delivery.detail


def test_a_name_that_resolves_to_a_metadata_address_is_refused_at_send_time() -> None:
    sender = WebhookSender(2, allow_loopback=False, resolver=lambda _host: ["169.254.169.254"])
    with pytest.raises(DeliveryError) as refused:
        sender.send(Webhook("http://innocent.example.org/x"), Notice("s", "t"))
    assert not refused.value.retry
    assert "metadata" in refused.value.message


def test_a_full_queue_drops_instead_of_blocking(core: Sandman) -> None:
    notifier = Notifier(
        core.notifications,
        WebhookSender(1, False),
        TerminalSender(core.db, core.runtime, 1),
        queue_size=1,
        workers=0,  # nothing takes from the queue
    )
    assert notifier.notify("alice", None, "one", "1")
    assert not notifier.notify("alice", None, "two", "2")
    assert notifier.dropped == 1


def test_no_terminal_without_a_running_session(core: Sandman) -> None:
    sender = TerminalSender(core.db, core.runtime, 1)
    with pytest.raises(DeliveryError):
        sender.send(Notice("s", "t", "alice", "no-such-session"))


def test_idle_warnings_are_not_written_twice_to_terminals(
    core: Sandman, runtime: FakeRuntime, mail: MailReceiver
) -> None:
    """The idle sweep writes its warnings to the terminals itself; the notifier sends
    them on the other channels only."""
    session = core.sessions.create(SessionRequest("bea", gpu=GpuRequest(gpu_count=0))).session
    core.notifications.set_user(
        "bea", Channels(email="bea@example.org", terminal=True), actor="bea"
    )
    assert core.notifier.notify("bea", session.id, "Idle", "Reclaimed soon.", kind="idle")
    assert core.notifier.flush()
    assert len(mail.wait(1)) == 1
    assert not [e for e in runtime.exec_log if e[1][:2] == ["sh", "-c"]]
