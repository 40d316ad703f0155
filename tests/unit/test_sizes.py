from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sandman.config import Settings
from sandman.sizes import GIB, MIB, TIB, format_size, parse_optional_size, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("50g", 50 * GIB),
        ("50G", 50 * GIB),
        ("64m", 64 * MIB),
        ("64MiB", 64 * MIB),
        ("1.5t", int(1.5 * TIB)),
        ("2TB", 2 * TIB),
        ("512", 512),
        (" 10 g ", 10 * GIB),
        (4096, 4096),
    ],
)
def test_sizes_are_binary(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "big", "-1g", "1x", "1 gig", "g", True, -5])
def test_bad_sizes(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("text", ["none", "None", "off", "0", 0, None, "false"])
def test_no_limit(text: object) -> None:
    assert parse_optional_size(text) is None


@pytest.mark.parametrize(
    ("size", "text"), [(50 * GIB, "50G"), (int(1.5 * TIB), "1.5T"), (64 * MIB, "64M"), (12, "12B")]
)
def test_sizes_read_back(size: int, text: str) -> None:
    assert format_size(size) == text


def test_the_workspace_quota_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).workspace_quota == 50 * GIB  # on by default
    monkeypatch.setenv("SANDMAN_WORKSPACE_QUOTA", "none")
    assert Settings(data_dir=tmp_path).workspace_quota is None
    monkeypatch.setenv("SANDMAN_WORKSPACE_QUOTA", "0")
    assert Settings(data_dir=tmp_path).workspace_quota is None
    monkeypatch.setenv("SANDMAN_WORKSPACE_QUOTA", "2t")
    assert Settings(data_dir=tmp_path).workspace_quota == 2 * TIB
    for wrong in ("1m", "17t", "lots"):
        monkeypatch.setenv("SANDMAN_WORKSPACE_QUOTA", wrong)
        with pytest.raises(ValidationError, match="workspace_quota"):
            Settings(data_dir=tmp_path)
