"""Accounts on a real (migrated) SQLite database and a fake runtime."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import fake_core

from sandman.core import Sandman


@pytest.fixture
def core(tmp_path: Path) -> Iterator[Sandman]:
    runtime = FakeRuntime()
    sandman = fake_core(tmp_path, runtime, default_mig_profile=None)
    yield sandman
    sandman.stop()
