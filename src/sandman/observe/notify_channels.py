"""Notification channels and messages, with no I/O: what a notice is, which webhook
URLs are acceptable, and the bodies sent to each kind of receiver.

A webhook URL often *is* a secret (Slack's and Teams' carry their token in the
path), so it is only ever shown, logged or audited as ``redact_url`` gives it:
scheme, host and port.

Which URLs are refused (SSRF: a user must not make Sandman post to places only
Sandman can reach): anything but http and https; addresses that are link-local
(169.254.0.0/16, fe80::/10: where cloud metadata services answer), the known
metadata names and addresses, unspecified, multicast and broadcast addresses,
always; this host's own addresses (loopback, ``localhost``) unless the setting
``notify_allow_loopback`` says otherwise. Private ranges stay allowed: a lab's
own chat server is often on one. A name is checked again, on its resolved
addresses, before each delivery (``refused_address``).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from sandman.errors import InvalidRequest

MAX_URL = 2048
METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class WebhookFormat(StrEnum):
    JSON = "json"  # Sandman's own fields, for scripts
    SLACK = "slack"  # {"text": ...}: Slack, Mattermost, Rocket.Chat incoming webhooks
    TEAMS = "teams"  # an Adaptive Card message: Teams workflows and connectors


@dataclass(frozen=True)
class Webhook:
    url: str
    format: WebhookFormat = WebhookFormat.JSON


@dataclass(frozen=True)
class Channels:
    """Where one audience's notifications go."""

    webhook: Webhook | None = None
    email: str | None = None
    terminal: bool = False

    @property
    def empty(self) -> bool:
        return self.webhook is None and self.email is None and not self.terminal


@dataclass(frozen=True)
class Notice:
    """One thing to tell someone. ``user_id`` None: the admins. ``session_id``: the
    session it concerns, whose terminals can show it."""

    subject: str
    text: str
    user_id: str | None = None
    session_id: str | None = None
    severity: str = "info"  # info | warning | critical
    kind: str = "message"  # what raised it: an alert's name, "idle", an anomaly
    at: datetime | None = None

    @property
    def audience(self) -> str:
        return self.user_id or "admins"


def redact_url(url: str) -> str:
    """What may be shown of a webhook URL: scheme, host and port, the rest as "..."."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an invalid URL)"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme or '?'}://{host}{port}/..."


def refused_address(address: str, allow_loopback: bool) -> str | None:
    """Why a webhook may not be sent to ``address`` (an IP), or None when it may."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified or ip.is_multicast or ip == ipaddress.ip_address("255.255.255.255"):
        return "not a host's address"
    if ip.is_loopback and not allow_loopback:
        return "this host (set SANDMAN_NOTIFY_ALLOW_LOOPBACK to allow)"
    return None


def check_webhook_url(url: str, allow_loopback: bool) -> str:
    """``url`` if a webhook may be sent to it; ``InvalidRequest`` saying why not."""
    if len(url) > MAX_URL or any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise InvalidRequest("a webhook URL has at most 2048 characters and no blanks")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise InvalidRequest("the webhook URL is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidRequest("a webhook URL must start with http:// or https://")
    if not host:
        raise InvalidRequest("the webhook URL names no host")
    name = host.rstrip(".").lower()
    if name in METADATA_HOSTS:
        raise InvalidRequest(f"webhooks to {name} are refused: a cloud metadata service")
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        name = "127.0.0.1"
    try:
        why = refused_address(name, allow_loopback)
    except ValueError:
        return url  # a name: its addresses are checked before each delivery
    if why is not None:
        raise InvalidRequest(f"webhooks to {redact_url(url)} are refused: {why}")
    return url


def _when(notice: Notice) -> str:
    return (notice.at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")


def webhook_body(notice: Notice, format: WebhookFormat) -> dict[str, Any]:
    """The JSON body for a webhook of ``format``."""
    if format == WebhookFormat.SLACK:
        return {"text": f"*{notice.subject}*\n{notice.text}"}
    if format == WebhookFormat.TEAMS:
        return {
            "type": "message",
            "summary": notice.subject,
            "attachments": [
                {
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "body": [
                            {
                                "type": "TextBlock",
                                "text": notice.subject,
                                "weight": "Bolder",
                                "size": "Medium",
                                "wrap": True,
                            },
                            {"type": "TextBlock", "text": notice.text, "wrap": True},
                        ],
                    },
                }
            ],
        }
    return {
        "subject": notice.subject,
        "text": notice.text,
        "user_id": notice.user_id,
        "session_id": notice.session_id,
        "severity": notice.severity,
        "kind": notice.kind,
        "at": _when(notice),
    }


def encode_body(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


def email_message(notice: Notice, to: str, sender: str) -> EmailMessage:
    """A plain-text e-mail of the notice (headers made safe by ``email``'s policy)."""
    message = EmailMessage()
    message["Subject"] = f"[Sandman] {' '.join(notice.subject.split())}"
    message["From"] = sender
    message["To"] = to
    message["X-Sandman-Kind"] = " ".join(notice.kind.split())[:64]
    lines = [notice.text.strip(), ""]
    if notice.session_id:
        lines.append(f"Session: {notice.session_id}")
    lines.append(f"Severity: {notice.severity}")
    lines.append(f"Sent: {_when(notice)}")
    message.set_content("\n".join(lines) + "\n")
    return message
