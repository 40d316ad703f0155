"""What GPU time costs: rates per GPU model per hour, and the price of one grant.

Rates come from the settings (``SANDMAN_GPU_RATES``, ``SANDMAN_CURRENCY``...) and,
on top of them, from a YAML file (``SANDMAN_RATES_FILE``)::

    currency: USD
    default_rate: 0.0            # models not listed
    low_priority_discount: 0.25  # `low` sessions pay 75%
    rates:                       # per GPU-hour, by model (catalogue key or nvidia-smi name)
      H100-80GB: 8.0
      A100-80GB: 6.0
    profile_rates:               # optional: per MIG instance-hour, by model and profile
      A100-80GB:
        1g.10gb: 1.0

A MIG instance costs its model's rate x its normalised slices / 7 (the fair-share
units of ``policy.units``) unless its profile has a rate of its own; a share of a
GPU costs its fraction; a whole GPU its rate. Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from sandman.errors import ConfigurationError
from sandman.gpu.catalogue import find_model
from sandman.policy.units import WHOLE, grant_slices

# Seed 003's defaults (per GPU-hour).
DEFAULT_RATES = "H100-80GB=8.0,A100-80GB=6.0,RTX-4090=2.0"
LOW = "low"


def model_key(name: str | None) -> str:
    """The catalogue key a GPU is priced and reported under (its name when unknown)."""
    if not name:
        return "unknown"
    model = find_model(name)
    return model.key if model is not None else name


def _rate(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigurationError(f"{where}: a rate is a number of at least 0, not {value!r}")
    return float(value)


def parse_rate_list(text: str) -> dict[str, float]:
    """``"H100-80GB=8,RTX-4090=2"`` as {model key: rate}."""
    rates: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigurationError(f"GPU rates: {item!r} is not MODEL=RATE")
        try:
            number = float(value)
        except ValueError:
            raise ConfigurationError(f"GPU rates: {value!r} is not a number") from None
        rates[model_key(name.strip())] = _rate(number, f"GPU rates: {name.strip()}")
    return rates


@dataclass(frozen=True)
class Rates:
    """Prices per hour: per model (per whole GPU) and per MIG profile (per instance)."""

    per_gpu: Mapping[str, float] = field(default_factory=dict)  # model key -> rate
    per_profile: Mapping[tuple[str, str], float] = field(default_factory=dict)
    default_rate: float = 0.0
    currency: str = "USD"
    low_priority_discount: float = 0.0  # the fraction `low` sessions do not pay

    def gpu_rate(self, model: str) -> float:
        """One whole GPU of ``model`` (a catalogue key) for an hour."""
        return self.per_gpu.get(model, self.default_rate)

    def discount(self, priority: str | None) -> float:
        return self.low_priority_discount if priority == LOW else 0.0


@dataclass(frozen=True)
class Grant:
    """What one session holds, as the ledger keeps it."""

    gpu_name: str | None
    mig_profile: str | None
    gpu_share: float | None
    gpus: int  # how many grants (GPUs or instances)


@cache
def _slices(gpu_name: str | None, profile: str | None, share: float | None) -> float:
    return grant_slices(gpu_name, profile, share)


def grant_units(grant: Grant) -> float:
    """Normalised slices (sevenths of a GPU) the grant counts."""
    return grant.gpus * _slices(grant.gpu_name, grant.mig_profile, grant.gpu_share)


def hourly_price(rates: Rates, grant: Grant) -> float:
    """The grant's full price per hour, before any discount."""
    model = model_key(grant.gpu_name)
    if grant.mig_profile is not None and grant.gpu_share is None:
        own = rates.per_profile.get((model, grant.mig_profile.lower()))
        if own is not None:
            return own * grant.gpus
    return rates.gpu_rate(model) * grant_units(grant) / WHOLE


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigurationError(f"{where} must be a mapping")
    return {str(k): v for k, v in value.items()}


def _discount(value: Any, where: str) -> float:
    number = _rate(value, where)
    if number > 1:
        raise ConfigurationError(f"{where}: a discount is a fraction from 0 to 1, not {value!r}")
    return number


def build_rates(
    gpu_rates: str = DEFAULT_RATES,
    default_rate: float = 0.0,
    currency: str = "USD",
    low_priority_discount: float = 0.0,
    document: Mapping[str, Any] | None = None,
) -> Rates:
    """The settings' rates with a rates file's ``document`` on top of them."""
    doc = _mapping(document, "the rates file")
    unknown = set(doc) - {
        "currency",
        "default_rate",
        "low_priority_discount",
        "rates",
        "profile_rates",
    }
    if unknown:
        raise ConfigurationError(f"the rates file: unknown keys {', '.join(sorted(unknown))}")
    per_gpu = parse_rate_list(gpu_rates)
    for name, value in _mapping(doc.get("rates"), "rates").items():
        per_gpu[model_key(name)] = _rate(value, f"rates: {name}")
    per_profile: dict[tuple[str, str], float] = {}
    for name, profiles in _mapping(doc.get("profile_rates"), "profile_rates").items():
        for profile, value in _mapping(profiles, f"profile_rates: {name}").items():
            where = f"profile_rates: {name} {profile}"
            per_profile[(model_key(name), profile.lower())] = _rate(value, where)
    label = str(doc.get("currency", currency)).strip()
    if not label or len(label) > 16:
        raise ConfigurationError(f"currency: a label of 1 to 16 characters, not {label!r}")
    return Rates(
        per_gpu=per_gpu,
        per_profile=per_profile,
        default_rate=_rate(doc.get("default_rate", default_rate), "default_rate"),
        currency=label,
        low_priority_discount=_discount(
            doc.get("low_priority_discount", low_priority_discount), "low_priority_discount"
        ),
    )


def load_rates(
    path: Path | None,
    gpu_rates: str = DEFAULT_RATES,
    default_rate: float = 0.0,
    currency: str = "USD",
    low_priority_discount: float = 0.0,
) -> Rates:
    """``build_rates`` with the YAML file at ``path`` (when set) on top."""
    document: Any = None
    if path is not None:
        try:
            document = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigurationError(f"cannot read the rates file {path}: {exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"the rates file {path} is not YAML: {exc}") from None
    return build_rates(gpu_rates, default_rate, currency, low_priority_discount, document)
