"""Writing private files safely (no window in which they are readable by others)."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, content: str, mode: int, uid: int, gid: int) -> None:
    """Write atomically with the mode and owner set before the content lands."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, content.encode())
        os.fchmod(fd, mode)
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)
    os.replace(tmp, path)
