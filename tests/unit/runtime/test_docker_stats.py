"""The engine's statistics document as ``ContainerStats`` (pure)."""

from __future__ import annotations

import pytest

from sandman.runtime.docker.backend import stats_from_engine


def test_a_one_shot_read_gives_cpu_time_and_no_rate() -> None:
    raw = {
        "cpu_stats": {"cpu_usage": {"total_usage": 12_500_000_000}, "system_cpu_usage": 9e12},
        "precpu_stats": {"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0},
    }
    stats = stats_from_engine(raw)
    assert stats is not None
    assert (stats.cpu_seconds, stats.cpu_percent) == (12.5, None)


def test_two_samples_give_the_engines_rate_in_percent_of_one_core() -> None:
    raw = {
        "cpu_stats": {
            "cpu_usage": {"total_usage": 3_000_000_000},
            "system_cpu_usage": 104_000_000_000,
            "online_cpus": 4,
        },
        "precpu_stats": {
            "cpu_usage": {"total_usage": 1_500_000_000},
            "system_cpu_usage": 100_000_000_000,
        },
    }
    stats = stats_from_engine(raw)
    assert stats is not None
    # 1.5 s of CPU while the host's 4 CPUs ran 4 s between the samples: 1.5 cores.
    assert stats.cpu_percent == pytest.approx(150.0)


def test_a_stopped_container_has_no_statistics() -> None:
    assert stats_from_engine({"cpu_stats": {"cpu_usage": {"total_usage": 0}}}) is None
    assert stats_from_engine({}) is None
