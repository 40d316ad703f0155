"""Where ``sandman login`` keeps its token: ``$XDG_CONFIG_HOME/sandman/credentials.json``
(``~/.config`` without it), mode 0600 in a directory of mode 0700, written whole or
not at all, so another user on the machine never reads it and a crash never
leaves half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def directory() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sandman"


def path() -> Path:
    return directory() / "credentials.json"


def _read() -> dict[str, Any] | None:
    try:
        data = json.loads(path().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if not isinstance(data.get("url"), str) or not isinstance(data.get("token"), str):
        return None
    return data


def load() -> tuple[str, str] | None:
    """The saved ``(url, token)``, or None when there is none (or it is unreadable)."""
    data = _read()
    return (data["url"], data["token"]) if data is not None else None


def token_id() -> str | None:
    """The saved token's id, which ``sandman logout`` revokes."""
    data = _read()
    value = data.get("token_id") if data is not None else None
    return value if isinstance(value, str) else None


def save(url: str, token: str, token_id: str | None = None) -> Path:
    folder = directory()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    body: dict[str, Any] = {"url": url.rstrip("/"), "token": token}
    if token_id is not None:
        body["token_id"] = token_id
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".credentials-")  # mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(body, handle, indent=2)
            handle.write("\n")
        os.replace(temporary, path())
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path()


def forget() -> bool:
    """Remove the saved token; whether there was one."""
    try:
        path().unlink()
    except FileNotFoundError:
        return False
    return True
