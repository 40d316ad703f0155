"""Messages users read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sandman.gateway.connection import login_banner, no_session_message
from sandman.gateway.routing import Route


def test_banner_names_gpu_and_expiry() -> None:
    now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    r = Route(
        session_id="s-42",
        user_id="user123",
        host="127.0.0.1",
        port=1,
        host_public_key="k",
        gpu="MIG 1g.10gb on NVIDIA H100 80GB HBM3",
        expires_at=now + timedelta(hours=3, minutes=5),
    )
    text = login_banner(r, now)
    assert "s-42" in text
    assert "MIG 1g.10gb on NVIDIA H100 80GB HBM3" in text
    assert "2025-01-01 15:05 UTC" in text
    assert "3h05m" in text


def test_expired_banner_does_not_go_negative() -> None:
    now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    r = Route("s", "u", "h", 1, "k", "gpu", now - timedelta(minutes=5))
    assert "0h00m" in login_banner(r, now)


def test_route_upstream_user_defaults_to_none() -> None:
    r = Route("s", "u", "h", 1, "k", "gpu", datetime.now(UTC))
    assert r.upstream_user is None


def test_no_session_message() -> None:
    assert no_session_message("user123") == "no running session for user123"
