"""The composition root's own small duties."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from tests.fakes.runtime import FakeRuntime

from sandman import core as core_module
from sandman.config import Settings
from sandman.core import Sandman, admin_token
from sandman.errors import ConfigurationError, RuntimeUnavailable


def test_a_generated_admin_token_reaches_only_a_terminal(tmp_path: Path) -> None:
    said: list[str] = []
    quiet = Settings(data_dir=tmp_path / "a")
    token = admin_token(quiet, said.append, show_secret=False)
    assert token not in "".join(said) and "admin_token" in "".join(said)
    assert (tmp_path / "a" / "admin_token").read_text().strip() == token
    loud = Settings(data_dir=tmp_path / "b")
    shown = admin_token(loud, said.append, show_secret=True)
    assert shown in said[-1]


def test_background_work_retries_soon_while_the_runtime_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reconciler re-checks every session as soon as the engine answers again,
    not a whole interval later."""
    monkeypatch.setattr(core_module, "RETRY_UNAVAILABLE", 0.05)
    core = Sandman(
        Settings(data_dir=tmp_path, admin_token="t", ssh_mode="direct"),
        runtime=FakeRuntime(),
        announce=lambda _: None,
        with_gateway=False,
    )
    calls: list[float] = []
    done = threading.Event()

    def work() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeUnavailable("the engine is restarting")
        done.set()

    core._loop("reconciler", 1.0, work)
    try:
        assert done.wait(5)
    finally:
        core.stop()
    assert calls[1] - calls[0] < 0.5  # the retry, not the one-second interval


def test_each_reconciler_pass_first_checks_the_network_and_its_firewall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Rules an engine restart or a firewall reload dropped come back within a pass;
    a failure there is logged and the pass still runs."""
    runtime = FakeRuntime()
    core = Sandman(
        Settings(data_dir=tmp_path, admin_token="t", ssh_mode="direct"),
        runtime=runtime,
        announce=lambda _: None,
        with_gateway=False,
    )
    passes: list[int] = []
    monkeypatch.setattr(core.reconciler, "run_once", lambda: passes.append(1))
    try:
        core._reconcile()
        assert runtime.calls["prepare"] == 1 and passes == [1]

        def refuse() -> None:
            raise ConfigurationError("iptables is not installed")

        monkeypatch.setattr(runtime, "prepare", refuse)
        core._reconcile()
        assert passes == [1, 1] and "iptables is not installed" in caplog.text
    finally:
        core.stop()
