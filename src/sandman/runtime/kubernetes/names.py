"""Names, label values and quantities as the Kubernetes API accepts them (pure).

User ids may hold ``_`` and end in ``-``, which names (DNS-1123 labels) and label
values refuse. ``dns_label`` and ``label_value`` keep a valid text as it is and turn
any other into a readable part, ``--`` and 16 hex digits of a hash of the original:
the two forms cannot meet (a kept text never holds ``--``), so two users never share
a claim, a pod or a label value. The original values ride in annotations.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from decimal import ROUND_CEILING, Decimal

from sandman.domain import validate_user_id
from sandman.errors import InvalidRequest
from sandman.sizes import GIB, KIB, MIB, parse_size

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_HASH = 16  # hex digits of sha256 in a rewritten name: 64 bits, no second preimage to find


def _hashed(text: str, readable: str, keep: str, room: int) -> str:
    digest = hashlib.sha256(text.encode()).hexdigest()[:_HASH]
    readable = re.sub(r"-+", "-", re.sub(keep, "-", readable)).strip("-_.")[: room - _HASH - 2]
    readable = readable.rstrip("-_.")
    return f"{readable or 'x'}--{digest}"


def dns_label(text: str) -> str:
    """``text`` as a DNS-1123 label (an object's name): itself when it is one and holds
    no ``--``, else a readable part, ``--`` and 16 hex digits of its hash."""
    if len(text) <= 63 and _DNS_LABEL.match(text) and "--" not in text:
        return text
    return _hashed(text, text.lower(), r"[^a-z0-9]", 63)


def label_value(text: str) -> str:
    """``text`` as a label value, kept or rewritten like ``dns_label``; select with it,
    read the original from the annotation of the same key."""
    if len(text) <= 63 and _LABEL_VALUE.match(text) and "--" not in text:
        return text
    return _hashed(text, text, r"[^-A-Za-z0-9_.]", 63)


def _label_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if not _LABEL_NAME.match(name) or len(name) > 63:
        raise ValueError(f"{key!r} is not a Kubernetes label key")
    if prefix and not all(_DNS_LABEL.match(part) for part in prefix.split(".")):
        raise ValueError(f"{key!r} is not a Kubernetes label key (its prefix)")
    return key


def labels(values: Mapping[str, str]) -> dict[str, str]:
    return {_label_key(key): label_value(value) for key, value in values.items()}


def validate_session_id(session_id: str) -> str:
    """Session ids are UUIDs; anything that is not a DNS label never reaches a name."""
    if not isinstance(session_id, str) or not (
        len(session_id) <= 63 and _DNS_LABEL.match(session_id)
    ):
        raise InvalidRequest(
            f"invalid session id {session_id!r}: use 1-63 lower-case letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return session_id


def pod_name(container_name: str) -> str:
    """The session's pod: named as its container would be on Docker, so ``remove`` and
    ``inspect`` take the same name there and here."""
    return dns_label(container_name)


def secret_name(session_id: str, prefix: str = "sandman") -> str:
    return dns_label(f"{prefix}-files-{validate_session_id(session_id)}")


def claim_name(user_id: str, prefix: str = "sandman") -> str:
    return dns_label(f"{prefix}-workspace-{validate_user_id(user_id)}")


def quantity(size: int | str) -> str:
    """Bytes as a Kubernetes quantity: ``16Gi``, ``64Mi``, or the number."""
    value = parse_size(size)
    for suffix, unit in (("Gi", GIB), ("Mi", MIB), ("Ki", KIB)):
        if value and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([KMGTPE]i|[mkMGTPE]|)$")
_FACTOR: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    **{s: Decimal(10) ** (3 * (i + 1)) for i, s in enumerate("kMGTPE")},
    **{s + "i": Decimal(2) ** (10 * (i + 1)) for i, s in enumerate("KMGTPE")},
}


def parse_quantity(text: str) -> int:
    """A Kubernetes quantity (``10Gi``, ``500M``, ``1073741824``) as a whole number,
    rounded up (a claim's size in bytes)."""
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    value = Decimal(match.group(1)) * _FACTOR[match.group(2)]
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def cpu_quantity(cpus: float) -> str:
    millis = round(cpus * 1000)
    if millis <= 0:
        raise ValueError(f"a CPU limit must be positive, not {cpus}")
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"
