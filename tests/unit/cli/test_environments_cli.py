"""``sandman env build`` builds on this engine (here: a stand-in for the build)."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from sandman.cli.main import app
from sandman.image import environment_build


def test_env_build_builds_the_named_environment_on_the_given_base(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def build(name: str, **options: Any) -> bool:
        calls.append((name, options))
        options["log"]("Step 1/17 : FROM my-cuda-ws:12 AS build")
        return True

    monkeypatch.setattr(environment_build, "build_environment_image", build)
    result = CliRunner().invoke(app, ["env", "build", "pytorch", "--from", "my-cuda-ws:12"])
    assert result.exit_code == 0, result.output
    ((name, options),) = calls
    assert name == "pytorch"
    assert options["base_image"] == "my-cuda-ws:12" and options["force"] is False
    assert "built sandman-pytorch:latest" in result.output


def test_env_build_says_when_the_image_is_current(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(environment_build, "build_environment_image", lambda *_, **__: False)
    result = CliRunner().invoke(app, ["env", "build", "jupyter"])
    assert result.exit_code == 0, result.output
    assert "sandman-jupyter:latest is current; --force rebuilds it" in result.output
