"""SANDMAN_EGRESS and SANDMAN_DNS_SERVERS: read, checked, and refused with the reason."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from sandman.config import Settings
from sandman.runtime.egress import Egress, parse_egress


def test_words_and_lists() -> None:
    assert parse_egress("allow") == Egress("allow")
    assert parse_egress(" DENY ") == Egress("deny")
    listed = parse_egress("10.20.0.0/16, 192.0.2.10,fd00:1::/64")
    assert listed.mode == "networks"
    assert [str(n) for n in listed.networks] == ["10.20.0.0/16", "192.0.2.10/32", "fd00:1::/64"]
    assert str(listed) == "10.20.0.0/16,192.0.2.10/32,fd00:1::/64"


@pytest.mark.parametrize("text", ["", " , ", "open", "10.20.0.1/16", "10.0.0.0/33", "allow,deny"])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="allow, deny"):
        parse_egress(text)


def test_settings_default_to_sealed_with_egress_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.seal_network and settings.egress == "allow" and settings.dns_servers == []
    monkeypatch.setenv("SANDMAN_EGRESS", "10.20.0.0/16,192.0.2.10")
    monkeypatch.setenv("SANDMAN_DNS_SERVERS", "10.255.255.53, 169.254.169.253")
    monkeypatch.setenv("SANDMAN_SEAL_NETWORK", "false")
    settings = Settings()
    assert settings.egress_policy.networks == (
        ipaddress.ip_network("10.20.0.0/16"),
        ipaddress.ip_network("192.0.2.10/32"),
    )
    assert settings.dns_servers == ["10.255.255.53", "169.254.169.253"]
    assert not settings.seal_network


def test_bad_settings_say_what_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDMAN_EGRESS", "10.20.0.1/16")
    with pytest.raises(ValidationError, match="host bits set"):
        Settings()
    monkeypatch.setenv("SANDMAN_EGRESS", "deny")
    monkeypatch.setenv("SANDMAN_DNS_SERVERS", "dns.example.org")
    with pytest.raises(ValidationError, match="does not appear to be an IPv4 or IPv6 address"):
        Settings()
