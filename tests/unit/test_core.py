"""The composition root's own small duties."""

from __future__ import annotations

from pathlib import Path

from sandman.config import Settings
from sandman.core import admin_token


def test_a_generated_admin_token_reaches_only_a_terminal(tmp_path: Path) -> None:
    said: list[str] = []
    quiet = Settings(data_dir=tmp_path / "a")
    token = admin_token(quiet, said.append, show_secret=False)
    assert token not in "".join(said) and "admin_token" in "".join(said)
    assert (tmp_path / "a" / "admin_token").read_text().strip() == token
    loud = Settings(data_dir=tmp_path / "b")
    shown = admin_token(loud, said.append, show_secret=True)
    assert shown in said[-1]
