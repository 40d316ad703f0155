"""Which GPUs a simulated machine has: YAML topology files and shipped presets.

A topology is what the simulated inventory boots from, so the whole product
(API, planner, gateway banner) can run and be tested on a laptop. The file
format is deliberately small::

    gpus:
      - model: A100-SXM4-40GB     # any name resolve_model() accepts
        mig: static               # static | dynamic | disabled
        instances: [3g.20gb@4, 1g.5gb]   # optional; "@start" pins a placement
      - model: L4
        sharing: {mode: time-slicing, replicas: 4}   # or "mps:4"; GPUs without MIG only

Instances without ``@start`` are placed the way the planner would place them,
so a preset never encodes a layout that blocks later requests.

GPU sharing is a per-GPU setting: here in the topology, and for NVML GPUs in
``SANDMAN_GPU_SHARING`` (``parse_sharing_setting``), in the same ``mode:replicas``
words.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from sandman.errors import ConfigurationError, InvalidLayout
from sandman.gpu.catalogue import GpuModel, profile, resolve_model, slot_mask, validate_layout
from sandman.gpu.planner import best_start
from sandman.gpu.types import MAX_REPLICAS, GpuSharing, MigMode

__all__ = [
    "GpuSpec",
    "InstanceSpec",
    "Topology",
    "list_presets",
    "load_topology",
    "parse_sharing",
    "parse_sharing_setting",
    "parse_topology",
]


@dataclass(frozen=True)
class InstanceSpec:
    """A pre-created MIG instance; ``start`` is always resolved after parsing."""

    profile: str
    start: int


@dataclass(frozen=True)
class GpuSpec:
    model: GpuModel
    mig: MigMode
    instances: tuple[InstanceSpec, ...] = ()
    sharing: GpuSharing | None = None


@dataclass(frozen=True)
class Topology:
    gpus: tuple[GpuSpec, ...]
    source: str  # preset name or file path, for messages


def list_presets() -> list[str]:
    """Names of the topologies shipped in ``sandman/gpu/presets``."""
    root = resources.files("sandman.gpu") / "presets"
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def load_topology(preset_or_path: str) -> Topology:
    """Load a preset by name, or a YAML file by path."""
    if preset_or_path in list_presets():
        text = (resources.files("sandman.gpu") / "presets" / f"{preset_or_path}.yaml").read_text()
        return parse_topology(yaml.safe_load(text), preset_or_path)
    path = Path(preset_or_path)
    if not path.is_file():
        raise ConfigurationError(
            f"GPU topology {preset_or_path!r} is neither a preset ({', '.join(list_presets())}) "
            "nor a readable file"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"cannot read GPU topology {path}: {exc}") from exc
    return parse_topology(data, str(path))


def parse_topology(data: object, source: str = "<topology>") -> Topology:
    """Validate an already-parsed YAML document into a ``Topology``."""
    if not isinstance(data, dict) or not isinstance(data.get("gpus"), list):
        raise ConfigurationError(f"{source}: expected a mapping with a 'gpus' list")
    gpus = data["gpus"]
    if not gpus:
        raise ConfigurationError(f"{source}: 'gpus' is empty")
    specs = tuple(_parse_gpu(entry, f"{source}: gpus[{i}]") for i, entry in enumerate(gpus))
    return Topology(specs, source)


def _parse_gpu(entry: object, where: str) -> GpuSpec:
    if isinstance(entry, str):
        entry = {"model": entry}
    if not isinstance(entry, dict) or "model" not in entry:
        raise ConfigurationError(f"{where}: expected a mapping with 'model'")
    unknown = set(entry) - {"model", "mig", "instances", "sharing"}
    if unknown:
        raise ConfigurationError(f"{where}: unknown keys {', '.join(sorted(map(str, unknown)))}")
    model = resolve_model(str(entry["model"]))
    sharing = None if entry.get("sharing") is None else parse_sharing(entry["sharing"], where)
    # A shared GPU is handed out whole or in replicas, never in MIG slices.
    mig = entry.get("mig", False if sharing is not None else None)
    mode = _parse_mode(mig, model, where)
    if sharing is not None and mode is not MigMode.DISABLED:
        raise ConfigurationError(
            f"{where}: sharing ({sharing.mode}) needs MIG disabled, but {model.key} has "
            f"mig: {mode}; a GPU is either sliced by MIG or shared, not both"
        )
    raw = entry.get("instances") or []
    if not isinstance(raw, list):
        raise ConfigurationError(f"{where}: 'instances' must be a list")
    if raw and mode is MigMode.DISABLED:
        raise ConfigurationError(f"{where}: instances given but MIG is disabled on {model.key}")
    return GpuSpec(model, mode, place_instances(model, [str(x) for x in raw], where), sharing)


def parse_sharing(value: object, where: str = "sharing") -> GpuSharing:
    """``{mode: mps, replicas: 4}`` or ``"mps:4"`` (also ``time-slicing:2``)."""
    if isinstance(value, str):
        mode, sep, count = value.strip().partition(":")
        if not sep:
            raise ConfigurationError(
                f"{where}: sharing {value!r} is not MODE:REPLICAS, e.g. mps:4 or time-slicing:2"
            )
        value = {"mode": mode, "replicas": count}
    if not isinstance(value, dict) or set(value) != {"mode", "replicas"}:
        raise ConfigurationError(f"{where}: sharing needs exactly 'mode' and 'replicas'")
    mode = str(value["mode"]).strip().lower()
    if mode not in ("time-slicing", "mps"):
        raise ConfigurationError(
            f"{where}: sharing mode must be time-slicing or mps, not {value['mode']!r}"
        )
    try:
        replicas = int(str(value["replicas"]).strip())
    except ValueError:
        replicas = 0
    if not 2 <= replicas <= MAX_REPLICAS:
        raise ConfigurationError(
            f"{where}: sharing replicas must be a whole number from 2 to {MAX_REPLICAS}, "
            f"not {value['replicas']!r}"
        )
    return GpuSharing("mps" if mode == "mps" else "time-slicing", replicas)


def parse_sharing_setting(text: str) -> dict[str, GpuSharing]:
    """``SANDMAN_GPU_SHARING``: ``mps:4`` for every GPU without MIG (key ``*``), or a
    comma-separated list per GPU index or UUID: ``0=mps:4,1=time-slicing:2``.

    Empty: no GPU is shared.
    """
    out: dict[str, GpuSharing] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, spec = part.rpartition("=")
        key = key.strip() if sep else "*"
        if not key or key in out:
            raise ConfigurationError(
                f"SANDMAN_GPU_SHARING: GPU {key or '?'!r} given twice or empty"
            )
        if "*" in out or (key == "*" and out):
            raise ConfigurationError(
                "SANDMAN_GPU_SHARING: a setting for every GPU (mps:4) cannot be mixed with "
                "per-GPU ones (0=mps:4)"
            )
        out[key] = parse_sharing(spec, f"SANDMAN_GPU_SHARING ({part})")
    return out


def _parse_mode(value: object, model: GpuModel, where: str) -> MigMode:
    if value is None:
        return MigMode.DYNAMIC if model.mig_capable else MigMode.DISABLED
    if value is False:  # YAML reads a bare "off"/"no" as false
        return MigMode.DISABLED
    try:
        mode = MigMode(str(value).lower())
    except ValueError:
        raise ConfigurationError(
            f"{where}: mig must be static, dynamic or disabled, not {value!r}"
        ) from None
    if mode is not MigMode.DISABLED and not model.mig_capable:
        raise ConfigurationError(f"{where}: {model.key} does not support MIG (mig: {mode})")
    return mode


def place_instances(model: GpuModel, items: list[str], where: str) -> tuple[InstanceSpec, ...]:
    """Resolve placements: pinned ones first, then the rest largest first."""
    pinned: list[InstanceSpec] = []
    loose: list[str] = []
    for item in items:
        name, sep, at = item.partition("@")
        name = name.strip().lower()
        try:
            profile(model, name)
        except InvalidLayout as exc:
            raise InvalidLayout(f"{where}: {exc.message}") from None
        if sep:
            try:
                pinned.append(InstanceSpec(name, int(at)))
            except ValueError:
                raise InvalidLayout(f"{where}: bad placement {item!r}") from None
        else:
            loose.append(name)
    try:
        validate_layout(model, [(i.profile, i.start) for i in pinned])
    except InvalidLayout as exc:
        raise InvalidLayout(f"{where}: {exc.message}") from None
    used = 0
    counts: dict[str, int] = {}
    media = False
    for spec in pinned:
        p = profile(model, spec.profile)
        used |= slot_mask(spec.start, p.size)
        counts[p.name] = counts.get(p.name, 0) + 1
        media = media or p.media
    placed = list(pinned)
    for name in sorted(loose, key=lambda n: -profile(model, n).size):
        p = profile(model, name)
        choice = best_start(model, used, counts, media, p)
        if choice is None:
            raise InvalidLayout(f"{where}: no room left for {name} on {model.key}")
        start = choice[1]
        used |= slot_mask(start, p.size)
        counts[p.name] = counts.get(p.name, 0) + 1
        media = media or p.media
        placed.append(InstanceSpec(name, start))
    return tuple(sorted(placed, key=lambda s: s.start))
