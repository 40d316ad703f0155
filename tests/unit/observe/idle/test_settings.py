"""Idle reclaim's settings: off by default, durations and warning lists from the
environment, and combinations that cannot work refused at start with the reason."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sandman.config import Settings
from sandman.errors import ConfigurationError


def test_off_by_default() -> None:
    settings = Settings()
    assert settings.idle_timeout == 0
    assert settings.idle_timeout_max is None
    assert settings.idle_warnings == (900.0, 120.0)
    assert (settings.idle_cpu_percent, settings.idle_gpu_percent) == (5.0, 5.0)
    assert settings.idle_check_interval == 30
    settings.check()


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDMAN_IDLE_TIMEOUT", "1h")
    monkeypatch.setenv("SANDMAN_IDLE_TIMEOUT_MAX", "8h")
    monkeypatch.setenv("SANDMAN_IDLE_WARNINGS", "2m, 30m")
    monkeypatch.setenv("SANDMAN_IDLE_CPU_PERCENT", "20")
    monkeypatch.setenv("SANDMAN_IDLE_GPU_PERCENT", "1")
    monkeypatch.setenv("SANDMAN_IDLE_CHECK_INTERVAL", "2s")
    settings = Settings()
    assert settings.idle_timeout == 3600 and settings.idle_timeout_max == 8 * 3600
    assert settings.idle_warnings == (1800.0, 120.0)
    assert (settings.idle_cpu_percent, settings.idle_gpu_percent) == (20.0, 1.0)
    assert settings.idle_check_interval == 2
    settings.check()


def test_seconds_for_tests_and_no_warnings() -> None:
    settings = Settings(idle_timeout="6s", idle_warnings="none", idle_check_interval="0.5s")
    assert (settings.idle_timeout, settings.idle_warnings) == (6, ())
    assert Settings(idle_timeout_max="0").idle_timeout_max is None
    assert Settings(idle_timeout_max="none").idle_timeout_max is None


@pytest.mark.parametrize(
    "values",
    [
        {"idle_warnings": "15m,soon"},
        {"idle_warnings": "0"},
        {"idle_timeout": "-1m"},
        {"idle_timeout_max": "a while"},
        {"idle_gpu_percent": 101},
        {"idle_cpu_percent": -1},
        {"idle_check_interval": 0},
    ],
)
def test_bad_values(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**values)  # type: ignore[arg-type]


def test_a_maximum_needs_a_default_within_it() -> None:
    Settings(idle_timeout="1h", idle_timeout_max="1h").check()
    with pytest.raises(ConfigurationError, match="at most idle_timeout_max"):
        Settings(idle_timeout="2h", idle_timeout_max="1h").check()
    with pytest.raises(ConfigurationError, match="must be set"):
        Settings(idle_timeout_max="8h").check()  # off would mean never, past any maximum
