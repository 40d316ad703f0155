"""Who may read /metrics: loopback freely, others with the metrics token only."""

from __future__ import annotations

import pytest

from sandman.errors import Forbidden, Unauthorized
from sandman.observe.access import check_metrics_access, is_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_loopback_needs_no_token(host: str) -> None:
    assert is_loopback(host)
    check_metrics_access(host, "", None)
    check_metrics_access(host, "Bearer wrong", "right")  # a loopback client is trusted


@pytest.mark.parametrize(
    "host", ["10.0.0.5", "::ffff:10.0.0.5", "2001:db8::1", "testclient", "", None]
)
def test_others_are_refused_when_no_token_is_configured(host: str | None) -> None:
    assert not is_loopback(host)
    with pytest.raises(Forbidden, match="SANDMAN_METRICS_TOKEN"):
        check_metrics_access(host, "Bearer anything", None)


@pytest.mark.parametrize(
    "header", ["", "Bearer", "Bearer  ", "Basic c2VjcmV0", "Bearer wrong", "secret"]
)
def test_others_need_the_right_bearer_token(header: str) -> None:
    with pytest.raises(Unauthorized):
        check_metrics_access("10.0.0.5", header, "secret")


def test_the_right_token_lets_others_in() -> None:
    check_metrics_access("10.0.0.5", "Bearer secret", "secret")
    check_metrics_access("10.0.0.5", "bearer secret", "secret")


def test_a_request_a_proxy_forwarded_is_not_local() -> None:
    """A reverse proxy on this host makes every client look like loopback."""
    with pytest.raises(Forbidden):
        check_metrics_access("127.0.0.1", "", None, forwarded=True)
    with pytest.raises(Unauthorized):
        check_metrics_access("127.0.0.1", "", "secret", forwarded=True)
    check_metrics_access("127.0.0.1", "Bearer secret", "secret", forwarded=True)
