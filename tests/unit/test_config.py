from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sandman.config import Settings, parse_duration
from sandman.errors import ConfigurationError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1m", 60), ("30s", 30), ("2s", 2), ("1h", 3600), ("1.5m", 90), ("250ms", 0.25), (5, 5)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1s", "1 minute", "1y"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_seed_names_are_aliases_and_prefixed_names_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTL_CHECK_INTERVAL", "2s")
    monkeypatch.setenv("DB_PATH", "/tmp/seed.db")
    monkeypatch.setenv("WORKSPACE_ROOT", "/srv/workspaces")
    settings = Settings()
    assert settings.ttl_check_interval == 2
    assert settings.effective_database_url == "sqlite:////tmp/seed.db"
    assert settings.effective_workspace_root == Path("/srv/workspaces")
    monkeypatch.setenv("SANDMAN_TTL_CHECK_INTERVAL", "1m")
    assert Settings().ttl_check_interval == 60
    assert Settings(ttl_check_interval="30s").ttl_check_interval == 30  # a flag beats both


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.ttl_check_interval == 60 and settings.default_ttl_minutes == 60
    assert settings.effective_database_url == f"sqlite:///{tmp_path / '.sandman/sandman.db'}"
    assert settings.effective_workspace_root == tmp_path / ".sandman/workspaces"
    assert settings.gpu_backend == "simulated" and settings.shm_size == "2g"
    assert settings.cors_origins == []


def test_database_url_overrides_the_sqlite_file() -> None:
    settings = Settings(database_url="postgresql+psycopg://u@localhost/sandman", db_path="/x.db")
    assert settings.effective_database_url.startswith("postgresql")


def test_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDMAN_ALLOWED_IMAGES", "sandman-workspace:latest, cuda-workspace:12")
    assert Settings().allowed_images == ["sandman-workspace:latest", "cuda-workspace:12"]


def test_gateway_ciphers_default_to_aes_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    default = Settings().gateway_ciphers
    assert default[0] == "aes128-gcm@openssh.com"
    assert all(c.endswith("-gcm@openssh.com") for c in default)  # see GATEWAY_CIPHERS
    Settings().check()
    monkeypatch.setenv("SANDMAN_GATEWAY_CIPHERS", "chacha20-poly1305@openssh.com, aes256-ctr")
    settings = Settings()
    assert settings.gateway_ciphers == ["chacha20-poly1305@openssh.com", "aes256-ctr"]
    settings.check()


@pytest.mark.parametrize(
    "overrides",
    [
        {"cors_origins": ["*"]},
        {"ssh_port_start": 20000, "ssh_port_end": 10000},
        {"default_ttl_minutes": 100, "max_ttl_minutes": 10},
        {"default_image": "other:latest"},
        {"gateway_ciphers": []},
        {"gateway_ciphers": ["aes128-gcm@openssh.com", "rot13"]},
    ],
)
def test_check_refuses_what_cannot_work(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Settings(**overrides).check()  # type: ignore[arg-type]


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(port=70000)
    with pytest.raises(ValidationError):
        Settings(ttl_check_interval="0s")
    with pytest.raises(ValidationError):
        Settings(start_timeout="0s")
    with pytest.raises(ValidationError):
        Settings(container_prefix="Bad Prefix")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *[(word, True) for word in ("true", "1", "yes", "on")],
        *[(word, False) for word in ("false", "0", "no", "off")],
    ],
)
def test_booleans_take_every_usual_spelling(
    monkeypatch: pytest.MonkeyPatch, text: str, value: bool
) -> None:
    monkeypatch.setenv("SANDMAN_GATEWAY_TUNING", text)
    monkeypatch.setenv("SANDMAN_MIG_FALLBACK", text)
    settings = Settings()
    assert settings.gateway_tuning is value and settings.mig_fallback is value


def test_gateway_tuning_defaults_to_whether_asyncssh_is_the_verified_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from sandman.core import gateway_tuning
    from sandman.gateway import asyncssh_tuning

    assert gateway_tuning(True) is True and gateway_tuning(False) is False
    assert gateway_tuning(None) is asyncssh_tuning.is_supported()


def test_the_seeds_piper_directory_means_its_pipe_yaml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SSHPIPER_CONFIG_DIR", str(tmp_path / "piper"))
    assert Settings().sshpiper_config == tmp_path / "piper" / "pipe.yaml"
    monkeypatch.setenv("SANDMAN_SSHPIPER_CONFIG", str(tmp_path / "other.yaml"))
    assert Settings().sshpiper_config == tmp_path / "other.yaml"  # the explicit file wins
