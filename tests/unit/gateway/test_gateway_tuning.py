"""The asyncssh fixes: they must notice when asyncssh changes underneath."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import asyncssh
import pytest
from asyncssh.channel import SSHChannel

from sandman.gateway import asyncssh_tuning


@pytest.fixture(autouse=True)
def stock() -> Iterator[None]:
    asyncssh_tuning.revert()
    yield
    asyncssh_tuning.revert()


def test_installed_asyncssh_is_the_pinned_one() -> None:
    # If this fails, asyncssh was upgraded: re-read SSHChannel._deliver_data,
    # re-check the fix in asyncssh_tuning, then update PINNED_VERSION and the digest.
    assert asyncssh.__version__ == asyncssh_tuning.PINNED_VERSION
    assert (
        asyncssh_tuning.source_digest(SSHChannel._deliver_data)
        == asyncssh_tuning.DELIVER_DATA_SHA256
    )
    assert asyncssh_tuning.is_supported()


def test_apply_and_revert() -> None:
    stock = SSHChannel._deliver_data
    assert asyncssh_tuning.apply()
    assert asyncssh_tuning.is_applied()
    assert SSHChannel._deliver_data is not stock
    assert asyncssh_tuning.apply()  # idempotent
    asyncssh_tuning.revert()
    assert SSHChannel._deliver_data is stock


def test_refuses_other_versions(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(asyncssh, "__version__", "9.9.9")
    with caplog.at_level(logging.WARNING):
        assert not asyncssh_tuning.apply()
    assert not asyncssh_tuning.is_applied()
    assert "stock asyncssh" in caplog.text


class FakeChannel:
    """Just the attributes _deliver_data touches."""

    def __init__(self, init: int, recv_window: int, buffered: list[int]) -> None:
        self._init_recv_window = init
        self._recv_window = recv_window
        self._recv_buf: list[tuple[bytes, Any]] = [(b"x" * n, None) for n in buffered]
        self._encoding = None
        self._session = self
        self.adjusts: list[int] = []
        self.delivered: list[bytes] = []

    def send_packet(self, pkttype: int, *args: bytes) -> None:
        self.adjusts.append(int.from_bytes(args[0], "big"))

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.delivered.append(data)


def test_window_is_not_regranted_for_buffered_data() -> None:
    init = 1000
    # 900 bytes outstanding, of which 200 still sit in the paused buffer
    chan = FakeChannel(init, recv_window=100, buffered=[200])
    asyncssh_tuning._deliver_data(chan, b"y" * 10, None)
    assert chan.delivered == [b"y" * 10]
    # only the 700 delivered bytes are granted again; buffered + window == init
    assert chan.adjusts == [700]
    assert chan._recv_window + 200 == init


def test_stock_behaviour_would_regrant_everything() -> None:
    """Documents the bug the fix exists for (fails if asyncssh fixes it)."""
    chan = FakeChannel(1000, recv_window=100, buffered=[200])
    chan.logger = logging.getLogger("fake")  # type: ignore[attr-defined]
    chan.logger.debug2 = lambda *a: None  # type: ignore[attr-defined]
    SSHChannel._deliver_data(chan, b"y" * 10, None)  # type: ignore[arg-type]
    assert chan.adjusts == [900]


def test_no_adjust_while_window_is_half_open() -> None:
    chan = FakeChannel(1000, recv_window=600, buffered=[])
    asyncssh_tuning._deliver_data(chan, b"z", None)
    assert chan.adjusts == []
