"""Fragmentation-aware MIG placement: which GPU and slot keep the most useful capacity.

Why. A MIG profile may only start at certain memory slices (a ``4g`` only at 0, a
``3g`` at 0 or 4, a ``1g`` never at 7 on 8-slice GPUs), so a free region can be
useless: a ``1g`` at slot 0 of an empty A100 leaves seven free slices and no room
for a ``4g`` or a ``7g``. Zambianco, Fasol and Doriguzzi-Corin ("An Online
Fragmentation-Aware GPU Scheduler for Multi-Tenant MIG-based Clouds", arXiv
2511.18906, 2025) place each request where a fragmentation measure, weighted by how
often each profile is asked for, grows the least.

The measure. For one GPU state, the *useful capacity* is
``sum over shapes q of weight(q) * placements(q)``, where ``placements(q)`` is how
many more instances of shape ``q`` alone could still be created there (free
placements, capped by the profile's ``-lgip`` count) and ``weight(q)`` is q's share
of recent requests divided by the places for ``q`` the whole fleet has left (at
least one; ``fleet_weights``). Every valid (GPU, start) for the request is scored by
the capacity it destroys; the smallest loss wins, then the GPU left fullest (best
fit, so empty GPUs stay empty for large requests), then the lowest GPU index and
start, so the choice is deterministic. Weighting by request frequency (not by size)
aims at the number of requests admitted: a placement may destroy a ``7g`` nobody
asks for to keep two ``1g`` places that are asked for all day. Dividing by the
fleet's places left makes a place worth its scarcity: on 64 GPUs a ``1g`` place is
one of hundreds, while the untouched GPUs a rare ``7g`` needs may be a handful, so a
small request fills a GPU already in use rather than opening an untouched one
(with per-GPU weights alone, small-heavy demand opened untouched GPUs freely and
lost up to 2% of admissions to first fit at 64 GPUs).

Shapes, not names: demand is keyed by ``(compute slices, memory slices)`` so that
``1g.5gb`` on an A100-40GB and ``1g.10gb`` on an H100 are one shape and a mixed
fleet learns one distribution. ``DemandRecorder`` learns the weights online from the
requests a server sees (an exponentially decaying count that starts from
``PRIOR``, so the prior fades once real requests arrive); it holds a lock but does
no I/O. ``place_mig`` and its helpers are pure.

What it does not do: refuse. Any request first fit could place is placed (the
candidates are all valid placements, and the policy only orders them).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from sandman.gpu.catalogue import GpuModel, MigProfile, find_model, slot_mask
from sandman.gpu.types import Allocation, GpuDevice

__all__ = [
    "PRIOR",
    "DemandRecorder",
    "DemandWeights",
    "MigGpu",
    "Placement",
    "Shape",
    "best_start",
    "capacity",
    "fleet_weights",
    "place_mig",
    "placements_left",
    "ranked_profiles",
    "shape_of",
]

Shape = tuple[int, int]  # (compute slices, memory slices)


def shape_of(profile: MigProfile) -> Shape:
    return (profile.compute_slices, profile.memory_slices)


@dataclass(frozen=True)
class DemandWeights:
    """Each shape's share of the requests expected (whole percents); hashable."""

    shares: tuple[tuple[Shape, float], ...]

    @classmethod
    def of(cls, weights: Mapping[Shape, float]) -> DemandWeights:
        total = sum(w for w in weights.values() if w > 0)
        if total <= 0:
            return PRIOR
        # Rounded to whole percents: a decision's scores are cached per weights, and a
        # snapshot then changes only when the demand really moves.
        shares = ((s, round(w / total, 2)) for s, w in weights.items() if w > 0)
        return cls(tuple(sorted((s, w) for s, w in shares if w > 0)))

    def weight(self, shape: Shape) -> float:
        for s, w in self.shares:
            if s == shape:
                return w
        return 0.0

    def as_dict(self) -> dict[Shape, float]:
        return dict(self.shares)


# A busy shared server: mostly small interactive sessions, some training jobs.
# Every 8-slice shape keeps a little weight, so no profile is ever worth nothing.
PRIOR = DemandWeights(
    (
        ((1, 1), 0.40),
        ((1, 2), 0.05),
        ((2, 2), 0.20),
        ((3, 4), 0.15),
        ((4, 4), 0.10),
        ((7, 8), 0.10),
    )
)


class DemandRecorder:
    """Learns the demand weights from the requests seen; safe to share between threads.

    Each request multiplies every count by ``decay`` and adds one to its shape, so the
    weights follow the last few ``half_life`` requests; the prior starts as
    ``prior_mass`` requests and fades the same way.
    """

    def __init__(
        self, prior: DemandWeights = PRIOR, prior_mass: float = 50.0, half_life: float = 500.0
    ) -> None:
        self._decay = 0.5 ** (1.0 / half_life)
        self._mass: dict[Shape, float] = {s: w * prior_mass for s, w in prior.shares}
        self._lock = threading.Lock()
        self._snapshot: DemandWeights | None = prior

    def record(self, shape: Shape) -> None:
        with self._lock:
            for s in self._mass:
                self._mass[s] *= self._decay
            self._mass[shape] = self._mass.get(shape, 0.0) + 1.0
            self._snapshot = None

    def record_profile(self, model_key: str, profile_name: str) -> None:
        """Record a request for ``profile_name`` of a catalogued model (unknown: ignored)."""
        model = find_model(model_key)
        p = model.profile(profile_name) if model else None
        if p is not None:
            self.record(shape_of(p))

    def record_grant(self, allocations: Sequence[Allocation], devices: Sequence[GpuDevice]) -> None:
        """Record the MIG profile a grant (or a request refused for room) was for."""
        models = {d.uuid: d.model for d in devices}
        for a in allocations:
            if a.profile is not None and a.kind in ("mig_create", "mig_instance"):
                self.record_profile(models.get(a.gpu_uuid, ""), a.profile)

    def record_asked(self, profile_name: str | None, devices: Sequence[GpuDevice]) -> None:
        """Record a request for ``profile_name`` on the first model here that offers it."""
        if profile_name is None:
            return
        for d in devices:
            model = find_model(d.model)
            p = model.profile(profile_name) if model else None
            if p is not None:
                self.record(shape_of(p))
                return

    def weights(self) -> DemandWeights:
        with self._lock:
            if self._snapshot is None:
                self._snapshot = DemandWeights.of(self._mass)
            return self._snapshot


# ---- the measure ------------------------------------------------------------


def ranked_profiles(model: GpuModel) -> tuple[MigProfile, ...]:
    """Profiles that count for capacity, largest first (``+me`` variants excluded)."""
    return _ranked_by_key(model.key)


@lru_cache(maxsize=64)
def _ranked_by_key(model_key: str) -> tuple[MigProfile, ...]:
    model = find_model(model_key)
    assert model is not None
    return tuple(
        sorted(
            (p for p in model.profiles if not p.media),
            key=lambda p: (-p.memory_slices, -p.compute_slices, p.name),
        )
    )


@lru_cache(maxsize=16384)
def _placements(model_key: str, used: int, count_key: tuple[int, ...]) -> tuple[int, ...]:
    """Per ranked profile: how many more instances of it alone fit (``-lgip`` cap kept)."""
    ranked = _ranked_by_key(model_key)
    return tuple(
        min(
            sum(1 for s in p.starts if not used & slot_mask(s, p.size)),
            max(0, p.max_count - n),
        )
        for p, n in zip(ranked, count_key, strict=True)
    )


def placements_left(model: GpuModel, used: int, counts: Mapping[str, int]) -> tuple[int, ...]:
    """Per profile of ``ranked_profiles``: how many more of it alone fit on this GPU."""
    ranked = ranked_profiles(model)
    return _placements(model.key, used, tuple(counts.get(p.name, 0) for p in ranked))


def best_start(
    model: GpuModel,
    used: int,
    counts: Mapping[str, int],
    media_used: bool,
    profile: MigProfile,
) -> tuple[tuple[int, ...], int] | None:
    """The start on one GPU that loses the fewest placements, largest profile first:
    (loss vector, start), or ``None`` when the profile fits nowhere on it.

    Lexicographic (losing a ``7g`` is worse than losing any number of ``1g``s) and
    demand-blind: what layout advice uses to lay out a GPU, and what the planner
    chose before ``place_mig``.
    """
    key = tuple(counts.get(p.name, 0) for p in model.profiles)
    return _best_start(model.key, used, key, media_used, profile.name)


@lru_cache(maxsize=65536)
def _best_start(
    model_key: str, used: int, count_key: tuple[int, ...], media_used: bool, name: str
) -> tuple[tuple[int, ...], int] | None:
    model = find_model(model_key)
    assert model is not None
    counts = {p.name: n for p, n in zip(model.profiles, count_key, strict=True)}
    profile = model.profile(name)
    assert profile is not None
    if counts[name] >= profile.max_count or (profile.media and media_used):
        return None
    before = placements_left(model, used, counts)
    after_counts = dict(counts)
    after_counts[name] += 1
    best: tuple[tuple[int, ...], int] | None = None
    for s in profile.starts:
        mask = slot_mask(s, profile.size)
        if used & mask:
            continue
        after = placements_left(model, used | mask, after_counts)
        loss = tuple(b - a for b, a in zip(before, after, strict=True))
        if best is None or loss < best[0]:
            best = (loss, s)
    return best


def capacity(
    model: GpuModel, used: int, counts: Mapping[str, int], weights: DemandWeights = PRIOR
) -> float:
    """The useful capacity of one GPU state: demand-weighted placements still possible."""
    ranked = ranked_profiles(model)
    free = _placements(model.key, used, tuple(counts.get(p.name, 0) for p in ranked))
    return sum(weights.weight(shape_of(p)) * n for p, n in zip(ranked, free, strict=True))


# ---- the choice --------------------------------------------------------------


@dataclass(frozen=True)
class MigGpu:
    """A dynamic MIG GPU as placement sees it: its occupied slices and instance counts."""

    index: int  # the device index (ties go to the lowest)
    label: str  # how operators see it: "GPU-1"
    model: GpuModel
    used: int  # bit i = memory slice i is taken
    counts: Mapping[str, int]  # instances per profile name
    media_used: bool = False


@dataclass(frozen=True)
class Placement:
    """The chosen GPU (position in the caller's sequence) and start, and why."""

    gpu: int
    start: int
    loss: float
    reason: str


_StateKey = tuple[str, int, tuple[tuple[str, int], ...], bool]


@lru_cache(maxsize=64)
def _shapes(model_key: str) -> tuple[Shape, ...]:
    return tuple(shape_of(r) for r in _ranked_by_key(model_key))


def _states(gpus: Sequence[MigGpu]) -> dict[_StateKey, list[int]]:
    """Distinct GPU states: (position of the lowest index in that state, how many)."""
    seen: dict[_StateKey, list[int]] = {}
    for pos, g in enumerate(gpus):
        held = tuple(sorted((k, n) for k, n in g.counts.items() if n))
        key = (g.model.key, g.used, held, g.media_used)
        entry = seen.get(key)
        if entry is None:
            seen[key] = [pos, 1]
        else:
            entry[1] += 1
            if g.index < gpus[entry[0]].index:
                entry[0] = pos
    return seen


def _count_key(g: MigGpu) -> tuple[int, ...]:
    return tuple(g.counts.get(r.name, 0) for r in ranked_profiles(g.model))


def _fleet_weights(
    gpus: Sequence[MigGpu], states: dict[_StateKey, list[int]], weights: DemandWeights
) -> dict[Shape, float]:
    left: dict[Shape, int] = {}
    for pos, many in states.values():
        g = gpus[pos]
        free = _placements(g.model.key, g.used, _count_key(g))
        for shape, n in zip(_shapes(g.model.key), free, strict=True):
            left[shape] = left.get(shape, 0) + n * many
    return {s: w / max(1, left.get(s, 0)) for s, w in weights.shares}


def fleet_weights(gpus: Sequence[MigGpu], weights: DemandWeights = PRIOR) -> dict[Shape, float]:
    """Each shape's weight for a decision on these GPUs: its demand share over the
    places the whole fleet has left for it (at least one). A shape is worth keeping
    when it is asked for and scarce, not merely when it is asked for: on a big machine
    with many 1g places left, losing one costs little, while the last few whole GPUs
    weigh a lot even if 7g requests are rare."""
    return _fleet_weights(gpus, _states(gpus), weights)


@lru_cache(maxsize=65536)
def _losses(
    model_key: str,
    used: int,
    count_key: tuple[int, ...],
    media_used: bool,
    name: str,
    held: int,
) -> tuple[tuple[tuple[int, ...], int, int], ...]:
    """(placements lost per ranked profile, free slices left, start) for each free start
    of ``name`` on one GPU state (``held``: instances of ``name`` there); independent of
    the weights, so cached by state."""
    model = find_model(model_key)
    assert model is not None
    ranked = _ranked_by_key(model_key)
    p = model.profile(name)
    if p is None or held >= p.max_count or (p.media and media_used):
        return ()
    now = _placements(model_key, used, count_key)
    after_counts = tuple(n + (r.name == name) for r, n in zip(ranked, count_key, strict=True))
    free_slices = model.memory_slices - bin(used).count("1")
    out = []
    for s in p.starts:
        mask = slot_mask(s, p.size)
        if used & mask:
            continue
        after = _placements(model_key, used | mask, after_counts)
        lost = tuple(b - a for b, a in zip(now, after, strict=True))
        out.append((lost, free_slices - p.size, s))
    return tuple(out)


def place_mig(
    name: str, gpus: Sequence[MigGpu], weights: DemandWeights = PRIOR
) -> Placement | None:
    """The valid (GPU, start) for profile ``name`` that destroys the least useful capacity.

    The capacity lost is weighted by ``fleet_weights``: demand share over the places
    the fleet has left. ``None`` when no GPU has room (exactly when first fit would find
    none). GPUs in the same state score the same and the lowest index wins their ties,
    so each distinct state is scored once, from a per-state cache.
    """
    states = _states(gpus)
    shape_w = _fleet_weights(gpus, states, weights)
    best: tuple[tuple[float, int, int, int], int] | None = None
    for pos, _ in states.values():
        g = gpus[pos]
        w = [shape_w.get(shape, 0.0) for shape in _shapes(g.model.key)]
        for lost, remaining, s in _losses(
            g.model.key, g.used, _count_key(g), g.media_used, name, g.counts.get(name, 0)
        ):
            loss = round(sum(wi * n for wi, n in zip(w, lost, strict=True)), 9)
            rank = (loss, remaining, g.index, s)
            if best is None or rank < best[0]:
                best = (rank, pos)
    if best is None:
        return None
    (loss, _, _, start), pos = best
    g = gpus[pos]
    return Placement(pos, start, loss, explain(name, g, start))


def explain(name: str, g: MigGpu, start: int) -> str:
    """Why this slot: the largest profile still possible on the GPU after it."""
    p = g.model.profile(name)
    assert p is not None
    used = g.used | slot_mask(start, p.size)
    counts = dict(g.counts)
    counts[name] = counts.get(name, 0) + 1
    ranked = ranked_profiles(g.model)
    free = _placements(g.model.key, used, tuple(counts.get(r.name, 0) for r in ranked))
    where = f"{name} at slice {start} of {g.label}"
    if g.used == 0 and used == slot_mask(0, g.model.memory_slices):
        return f"{where}: an empty GPU taken whole; partly used GPUs stay for smaller requests"
    kept = [r.name for r, n in zip(ranked, free, strict=True) if n > 0]
    if not kept:
        return f"{where}: filled {g.label}'s last gap; other GPUs keep their room"
    return f"{where}: kept {kept[0]} possible on {g.label}"
