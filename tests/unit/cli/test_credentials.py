"""The token ``sandman login`` saves: mode 0600 in a 0700 directory under
``$XDG_CONFIG_HOME``, and what the CLI's API client uses when no token is set."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sandman.cli import client, credentials


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in ("SANDMAN_ADMIN_TOKEN", "SANDMAN_TOKEN", "SANDMAN_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SANDMAN_DATA_DIR", str(tmp_path / "nothing-here"))
    return tmp_path / "xdg"


def test_save_load_forget(home: Path) -> None:
    assert credentials.load() is None
    path = credentials.save("https://gpu.example.org/", "sm_abc", "t1")
    assert path == home / "sandman" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert credentials.load() == ("https://gpu.example.org", "sm_abc")
    assert credentials.token_id() == "t1"
    credentials.save("https://gpu.example.org", "sm_new")  # replaced whole
    assert credentials.load() == ("https://gpu.example.org", "sm_new")
    assert credentials.token_id() is None
    assert [p.name for p in path.parent.iterdir()] == ["credentials.json"]
    assert credentials.forget() is True
    assert credentials.forget() is False
    assert credentials.load() is None


def test_home_config_without_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert credentials.path() == tmp_path / ".config" / "sandman" / "credentials.json"


def test_an_existing_open_directory_is_closed(home: Path) -> None:
    (home / "sandman").mkdir(parents=True, mode=0o755)
    credentials.save("http://x", "sm_t")
    assert stat.S_IMODE((home / "sandman").stat().st_mode) == 0o700


@pytest.mark.parametrize("content", ["not json", "[]", '{"url": "x"}', '{"url": 1, "token": "t"}'])
def test_a_damaged_file_is_no_login(home: Path, content: str) -> None:
    (home / "sandman").mkdir(parents=True)
    (home / "sandman" / "credentials.json").write_text(content)
    assert credentials.load() is None


def test_the_api_client_uses_the_saved_token(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials.save("https://gpu.example.org", "sm_saved")
    with client._client() as http:
        assert str(http.base_url) == "https://gpu.example.org/api/v1/"
        assert http.headers["Authorization"] == "Bearer sm_saved"
    monkeypatch.setenv("SANDMAN_URL", "http://127.0.0.1:9")
    with client._client() as http:
        assert str(http.base_url) == "http://127.0.0.1:9/api/v1/"
    monkeypatch.setenv("SANDMAN_TOKEN", "sm_from_env")
    with client._client() as http:
        assert http.headers["Authorization"] == "Bearer sm_from_env"
    monkeypatch.setenv("SANDMAN_ADMIN_TOKEN", "admin")
    with client._client() as http:
        assert http.headers["Authorization"] == "Bearer admin"
