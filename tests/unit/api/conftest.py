"""An API over a fake runtime: status codes, headers and bodies without Docker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime

from sandman.api.app import create_app
from sandman.config import Settings
from sandman.core import Sandman

TOKEN = "unit-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


def fake_core(root: Path, runtime: FakeRuntime, **overrides: Any) -> Sandman:
    """A Sandman on the fake runtime, its readiness probe the fake's."""
    values: dict[str, Any] = {
        "data_dir": root,
        "admin_token": TOKEN,
        "ssh_mode": "direct",
        "start_timeout": 5,
        "stop_grace_period": 0,
        **overrides,
    }
    core = Sandman(Settings(**values), runtime=runtime, announce=lambda _: None, with_gateway=False)
    core.sessions.probe = runtime.probe
    return core


@pytest.fixture
def api(tmp_path: Path, runtime: FakeRuntime) -> Iterator[TestClient]:
    core = fake_core(tmp_path, runtime, create_workers=2, create_wait=0.3, default_mig_profile=None)
    with TestClient(create_app(core, run_background=False)) as client:
        yield client
    if runtime.start_gate is not None:
        runtime.start_gate.set()
    core.stop()
