"""Which kind of GPU share a workload gets: a pure function of (workload, memory, topology).

Seed 003 allocates by workload (``training``, ``inference``, ``interactive``,
``development``) and the memory asked. This module turns that into the share a
session asks the planner for: a MIG profile by name, or a whole GPU of at least
some memory. It decides the *kind and size* only; which GPU and which slot stay
the planner's choice (``gpu.planner.plan``), made against what is free then.

The candidates are the machine's topology, not what is free now (a busy machine
answers "not now" from the planner, never "impossible" from here):

* every profile (``+me`` variants aside) of every MIG-enabled GPU's model, static
  or dynamic (an operator can create any of them on a static GPU);
* one whole GPU per GPU with MIG disabled, of its model's memory.

Rule. Among the candidates of the preferred kind with at least the memory asked,
take the one with the least memory; ties go to the fewest normalised slices
(sevenths of a GPU, ``policy.units``: ``3g.20gb`` before ``4g.20gb``, any profile
before a whole GPU), then the name. When no candidate of the preferred kind has the
memory, the other kind is tried by the same rule; only a request larger than every
GPU here is refused.

Preferred kinds:

* ``inference`` and ``development``: MIG. Serving a model and writing code rarely
  need a whole GPU; a slice isolates them and leaves the rest to others.
* ``training``: whole GPUs where the topology has one with the memory (no MIG
  overhead, the full memory bandwidth); MIG otherwise. Without a memory figure a
  training request asks for a whole GPU's worth: the smallest whole GPU, or on a
  machine that is all MIG the smallest full-GPU profile (``7g``).
* ``interactive``: either kind, whichever is smallest (a notebook takes what fits).

``use_mig`` (seed 003's ``useMig``) overrides the workload's preference when given:
``True`` prefers MIG, ``False`` whole GPUs, with the same fallback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from sandman.errors import InvalidRequest
from sandman.gpu.catalogue import MIB_PER_GIB, find_model
from sandman.gpu.types import GpuDevice, GpuRequest, MigMode
from sandman.policy.units import WHOLE, model_compute_slices

__all__ = [
    "WORKLOAD_PATTERN",
    "Candidate",
    "Choice",
    "WorkloadType",
    "candidates",
    "choose",
    "parse_workload",
]

Kind = Literal["mig", "whole"]


class WorkloadType(StrEnum):
    TRAINING = "training"
    INFERENCE = "inference"
    INTERACTIVE = "interactive"
    DEVELOPMENT = "development"


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" for c in word)


# The workload names in any case, as JSON Schema can state it (no inline flags).
WORKLOAD_PATTERN = f"^(?:{'|'.join(_any_case(w.value) for w in WorkloadType)})$"

PREFERENCE: dict[WorkloadType, Kind | None] = {
    WorkloadType.TRAINING: "whole",
    WorkloadType.INFERENCE: "mig",
    WorkloadType.DEVELOPMENT: "mig",
    WorkloadType.INTERACTIVE: None,  # either: the smallest fit
}


def parse_workload(text: str) -> WorkloadType:
    """A workload name in any case (the seed writes ``Inference``); 400 otherwise."""
    try:
        return WorkloadType(text.strip().lower())
    except ValueError:
        valid = ", ".join(w.value for w in WorkloadType)
        raise InvalidRequest(f"unknown workload type {text!r}; valid: {valid}") from None


@dataclass(frozen=True)
class Candidate:
    """A kind of share this machine can give: a MIG profile of a model, or a whole GPU."""

    kind: Kind
    memory_gb: float  # the profile's nominal GB, or the whole GPU's
    slices: float  # normalised: sevenths of a GPU (a whole GPU is 7)
    name: str  # the profile name, or the model's key for a whole GPU

    @property
    def order(self) -> tuple[float, float, str]:
        return (self.memory_gb, self.slices, self.name)


@dataclass(frozen=True)
class Choice:
    """What the workload gets, and the ``GpuRequest`` that asks the planner for it."""

    workload: WorkloadType
    candidate: Candidate
    request: GpuRequest
    fallback: bool  # the preferred kind had nothing with the memory asked
    reason: str


def candidates(devices: Sequence[GpuDevice]) -> list[Candidate]:
    """The shares this topology offers, one per (kind, name), in the rule's order."""
    found: dict[tuple[Kind, str], Candidate] = {}
    for device in devices:
        model = find_model(device.model)
        if device.mig_mode is MigMode.DISABLED:
            gb = float(model.memory_gb) if model else device.memory_total_mb / MIB_PER_GIB
            name = model.key if model else device.model
            found.setdefault(("whole", name), Candidate("whole", gb, WHOLE, name))
            continue
        if model is None or not model.mig_capable:
            continue
        per_slice = WHOLE / model_compute_slices(model)
        for profile in model.profiles:
            if profile.media:
                continue
            slices = profile.compute_slices * per_slice
            seen = found.get(("mig", profile.name))
            if seen is None or slices < seen.slices:
                found[("mig", profile.name)] = Candidate(
                    "mig", float(profile.memory_gb), slices, profile.name
                )
    return sorted(found.values(), key=lambda c: c.order)


def _fits(c: Candidate, workload: WorkloadType, memory_gb: float | None) -> bool:
    if memory_gb is not None:
        return c.memory_gb >= memory_gb
    # No figure: a training request wants a whole GPU's worth (a full-GPU profile).
    return workload is not WorkloadType.TRAINING or c.slices >= WHOLE


def choose(
    workload: WorkloadType,
    memory_gb: float | None,
    devices: Sequence[GpuDevice],
    use_mig: bool | None = None,
) -> Choice:
    """The share for ``workload`` needing ``memory_gb`` (None: no minimum) on ``devices``.

    Raises ``InvalidRequest`` when the memory is not positive or no GPU here has it.
    """
    if memory_gb is not None and not memory_gb > 0:
        raise InvalidRequest(f"gpu_memory_gb must be positive, not {memory_gb:g}")
    preferred: Kind | None = PREFERENCE[workload]
    if use_mig is not None:
        preferred = "mig" if use_mig else "whole"
    fitting = [c for c in candidates(devices) if _fits(c, workload, memory_gb)]
    if not fitting:
        asked = f"{memory_gb:g} GB" if memory_gb is not None else "a whole GPU"
        raise InvalidRequest(f"no GPU on this machine offers {asked} for a {workload} workload")
    ranked = [c for c in fitting if preferred is None or c.kind == preferred]
    fallback = not ranked
    chosen = (ranked or fitting)[0]  # already in (memory, slices, name) order
    if chosen.kind == "mig":
        request = GpuRequest(mig_profile=chosen.name)
        what = f"MIG profile {chosen.name}"
    else:
        request = GpuRequest(gpu_memory_gb=memory_gb or chosen.memory_gb, whole=True)
        what = f"a whole GPU ({chosen.name}, {chosen.memory_gb:g} GB)"
    reason = f"{workload} workload: {what}"
    if fallback and preferred is not None:
        other = "MIG profile" if preferred == "mig" else "whole GPU"
        reason += f"; no {other} here has the memory asked"
    return Choice(workload, chosen, request, fallback, reason)
