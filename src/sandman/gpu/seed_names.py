"""Seed 003's names for GPU models and MIG profiles, mapped to the catalogue's.

Seed 003 names a model ``H100_80GB`` or ``RTX4090`` (``devicesByModel``, its cost
rates) and a MIG profile by its model family and size, ``H100_2G20GB`` or
``A100_1G5GB``. The catalogue says ``H100-80GB`` and ``2g.20gb``. The mapping is
pure: a model key's parts are joined, a memory part (``80GB``) after an
underscore; a profile is ``<family>_<profile upper-cased, dot dropped>``, where the
family is the model key's first part (``H100`` for ``H100-80GB`` and ``H100-94GB``).
"""

from __future__ import annotations

import re

from sandman.errors import InvalidRequest
from sandman.gpu.catalogue import GpuModel

__all__ = ["catalogue_profile", "model_family", "seed_model_name", "seed_profile_name"]

_MEMORY_PART = re.compile(r"^\d+GB$")
_SEED_PROFILE = re.compile(r"^([A-Z0-9]+)_(\d+)G(\d+)GB(\+ME)?$")


def seed_model_name(model_key: str) -> str:
    """``H100-80GB`` -> ``H100_80GB``, ``RTX-4090`` -> ``RTX4090``, ``B200`` -> ``B200``."""
    first, *rest = model_key.upper().split("-")
    name = first
    for part in rest:
        name += f"_{part}" if _MEMORY_PART.match(part) else part
    return name


def model_family(model: GpuModel) -> str:
    """The family a seed profile name starts with: ``H100`` for ``H100-80GB``."""
    return model.key.upper().split("-")[0]


def seed_profile_name(model: GpuModel, profile: str) -> str:
    """``2g.20gb`` on an H100 -> ``H100_2G20GB``; ``1g.10gb+me`` -> ``H100_1G10GB+ME``."""
    return f"{model_family(model)}_{profile.upper().replace('.', '')}"


def catalogue_profile(model: GpuModel, name: str) -> str:
    """The catalogue's profile for ``name`` on ``model``: a seed name (``H100_2G20GB``,
    any case) or the catalogue's own (``2g.20gb``).

    ``InvalidRequest`` (400) for a name this model does not have, listing the valid
    seed names for it.
    """
    text = name.strip()
    direct = model.profile(text)
    if direct is not None:
        return direct.name
    match = _SEED_PROFILE.match(text.upper())
    if match is not None:
        family, compute, memory, media = match.groups()
        found = model.profile(f"{int(compute)}g.{int(memory)}gb{'+me' if media else ''}")
        if found is not None and family == model_family(model):
            return found.name
    valid = ", ".join(seed_profile_name(model, p.name) for p in model.profiles)
    if not valid:
        raise InvalidRequest(f"{model.key} does not support MIG; it takes no profile {name!r}")
    raise InvalidRequest(f"unknown MIG profile {name!r} for {model.key}; valid: {valid}")
