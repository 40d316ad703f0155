"""Notification channels without I/O: which webhook URLs are refused, what is shown of
them, the bodies each receiver gets, the e-mail, and what a terminal is sent."""

from __future__ import annotations

import pytest

from sandman.errors import InvalidRequest
from sandman.observe.notify_channels import (
    Notice,
    Webhook,
    WebhookFormat,
    check_webhook_url,
    email_message,
    redact_url,
    refused_address,
    webhook_body,
)
from sandman.observe.notify_store import keep_secret
from sandman.observe.terminal import clean, terminal_argv, terminal_text, written_count

NOTICE = Notice("GPU 0 is hot", "It is at 90 °C.", "alice", "s-1", "critical", "GpuOverheating")


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.slack.com/services/T000/B000/XXXXSECRET",
        "http://chat.lab.internal:8065/hooks/abc",
        "http://10.1.2.3/hook",  # a lab's own server on a private range
        "https://[2001:db8::1]/hook",
    ],
)
def test_webhook_urls_accepted(url: str) -> None:
    assert check_webhook_url(url, allow_loopback=False) == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.org/x", "http"),
        ("file:///etc/passwd", "http"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("http://169.254.10.10/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[::ffff:169.254.169.254]/", "metadata"),
        ("http://0.0.0.0:8080/", "not a host"),
        ("http://224.0.0.1/", "not a host"),
        ("http://127.0.0.1:8080/api/v1/sessions", "this host"),
        ("http://localhost:9093/api/v2/silences", "this host"),
        ("http://[::1]/", "this host"),
        ("http:///nohost", "no host"),
        ("http://example.org:99999/", "not a valid"),
        ("http://exa mple.org/", "blanks"),
    ],
)
def test_webhook_urls_refused(url: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_webhook_url(url, allow_loopback=False)
    assert why in refused.value.message
    assert "SECRET" not in refused.value.message


def test_loopback_only_when_allowed() -> None:
    assert check_webhook_url("http://127.0.0.1:9/x", allow_loopback=True)
    assert refused_address("127.0.0.1", allow_loopback=True) is None
    assert refused_address("169.254.169.254", allow_loopback=True) == "a cloud metadata address"


def test_a_url_is_shown_by_its_host_only() -> None:
    secret = "https://user:pw@hooks.slack.com:8443/services/T0/B0/SECRET?token=x"
    assert redact_url(secret) == "https://hooks.slack.com:8443/..."
    assert redact_url("http://[2001:db8::1]/x") == "http://[2001:db8::1]/..."


def test_the_shown_form_written_back_keeps_the_stored_url() -> None:
    stored = Webhook("https://hooks.slack.com/services/SECRET", WebhookFormat.SLACK)
    back = Webhook(redact_url(stored.url), WebhookFormat.TEAMS)
    assert keep_secret(back, stored) == Webhook(stored.url, WebhookFormat.TEAMS)
    new = Webhook("https://example.org/other", WebhookFormat.JSON)
    assert keep_secret(new, stored) == new
    assert keep_secret(None, stored) is None


def test_webhook_bodies() -> None:
    assert webhook_body(NOTICE, WebhookFormat.SLACK) == {"text": "*GPU 0 is hot*\nIt is at 90 °C."}
    teams = webhook_body(NOTICE, WebhookFormat.TEAMS)
    card = teams["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert [block["text"] for block in card["content"]["body"]] == [
        "GPU 0 is hot",
        "It is at 90 °C.",
    ]
    plain = webhook_body(NOTICE, WebhookFormat.JSON)
    assert plain["user_id"] == "alice" and plain["session_id"] == "s-1"
    assert plain["severity"] == "critical" and plain["kind"] == "GpuOverheating"


def test_email_headers_cannot_be_injected() -> None:
    notice = Notice("hot\r\nBcc: evil@example.org", "body", kind="x\nBcc: evil@example.org")
    message = email_message(notice, "alice@example.org", "sandman@example.org")
    assert message["Subject"] == "[Sandman] hot Bcc: evil@example.org"
    assert message["Bcc"] is None
    assert message["To"] == "alice@example.org"


def test_terminal_text_drops_escape_sequences() -> None:
    text = terminal_text("hot\x1b]0;owned\x07", "line 1\n\x1b[2Jline 2\r\nline\t3")
    assert "\x1b" not in text and "\x07" not in text
    assert text == "\r\n*** Sandman: hot]0;owned ***\r\nline 1\r\n[2Jline 2\r\nline 3\r\n\r\n"
    assert clean("a\u202eb") == "ab"  # bidi overrides are control characters too


def test_terminal_message_travels_as_an_argument() -> None:
    argv = terminal_argv("$(reboot)'\"; rm -rf /")
    assert argv[:2] == ["sh", "-c"] and argv[-1] == "$(reboot)'\"; rm -rf /"
    assert written_count("2\n") == 2 and written_count("") == 0 and written_count("x") == 0
