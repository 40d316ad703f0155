"""Sizes in bytes, as people write them: ``50g`` is 50 GiB, ``64m`` 64 MiB (no I/O)."""

from __future__ import annotations

import re
from typing import Any

KIB = 1024
MIB = KIB**2
GIB = KIB**3
TIB = KIB**4

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNIT = {"": 1, "k": KIB, "m": MIB, "g": GIB, "t": TIB, "p": KIB**5}
_OFF = {"none", "off", "false", "no", "0"}


def parse_size(value: Any) -> int:
    """``"50g"``, ``"1.5t"``, ``"64MiB"``, ``"512"`` or an int, as whole bytes.

    Units are binary (``g`` is 2**30), as ``df -h`` and Docker's limits count.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f"not a size: {value!r} (use e.g. 64m, 50g, 2t)")
        size = int(float(match.group(1)) * _UNIT[match.group(2).lower()])
    if size < 0:
        raise ValueError(f"a size cannot be negative: {value!r}")
    return size


def parse_optional_size(value: Any) -> int | None:
    """A size, or None for ``none``/``off``/``0`` (no limit)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _OFF):
        return None
    size = parse_size(value)
    return size or None


def format_size(size: int) -> str:
    """The largest binary unit that keeps one decimal honest: ``50G``, ``1.5T``, ``100M``."""
    for unit, factor in (("P", KIB**5), ("T", TIB), ("G", GIB), ("M", MIB), ("K", KIB)):
        if size >= factor:
            value = size / factor
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{size}B"
