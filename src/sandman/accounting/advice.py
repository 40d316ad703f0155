"""MIG layout advice for static GPUs: which full layout would have served the most.

A static GPU hands out only the instances an admin created, so its layout decides
which requests it can serve. This module replays a window's requests (served,
queued and refused for lack of room) against every full layout NVIDIA allows on the
model and against today's layout, and names the layout that would have served the
most slice-hours.

The replay is a loss system: requests arrive in order; one takes a free instance
of its profile (a memory request: the smallest free instance with enough memory)
for its duration, and one that finds none is lost (no queue, no fallback to another
GPU kind). Instances of one profile are interchangeable, so "first fit" is "any
free one": a heap of the times each instance frees up is the whole state.

Design choices:

* One layout for all static GPUs of a model: operators re-partition a model's
  GPUs alike, and the candidates stay a few dozen (per-GPU mixes would multiply).
* Candidates are the distinct *full* layouts (no further instance fits) by their
  multiset of profiles; where on the GPU each instance sits changes nothing a
  replay sees. ``+me`` profiles are left out (one per GPU, for media work).
* Today's layout always competes: the advice never serves less than it (on mixed
  layouts across GPUs, "keep today's" wins when no uniform layout beats them).
* At most ``MAX_ASKS`` requests are replayed, the most recent ones, with a note.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from sandman.gpu.catalogue import GpuModel, MigProfile, find_model, nominal_gb, slot_mask
from sandman.policy.units import profile_slices

MAX_ASKS = 20_000
TOP = 5  # candidates listed beside the advice


@dataclass(frozen=True)
class Ask:
    """One request as the replay sees it: when it came, for how long, and what it
    asked (a profile by name, or a memory size)."""

    at: float  # seconds (any epoch, one for all asks)
    hours: float
    profile: str | None = None
    memory_gb: float | None = None


@dataclass(frozen=True)
class Layout:
    """A full MIG layout of one GPU: its profiles (largest first) and one valid
    placement of them (``(profile, start)``, as ``nvidia-smi mig -cgi`` takes them)."""

    profiles: tuple[str, ...]
    placements: tuple[tuple[str, int], ...]

    @property
    def label(self) -> str:
        return layout_label(self.profiles)

    @property
    def counts(self) -> Counter[str]:
        return Counter(self.profiles)


@dataclass(frozen=True)
class Scored:
    label: str
    slice_hours: float


@dataclass(frozen=True)
class Advice:
    """The advice for one model's static GPUs over the replayed requests."""

    model: str
    gpus: int
    current: str  # today's layout (per GPU, ``;``-joined where the GPUs differ)
    current_slice_hours: float
    layout: Layout | None  # None: keep today's (nothing serves more)
    slice_hours: float  # what the advised layout would have served (today's if None)
    asked_slice_hours: float  # what the replayed requests asked in all
    requests: int  # requests this model could serve at all, in the window
    replayed: int
    candidates: int
    top: tuple[Scored, ...]
    notes: tuple[str, ...]

    @property
    def gain_percent(self) -> float | None:
        """How much more than today's, in percent; None when today's served nothing."""
        if self.current_slice_hours <= 0:
            return None
        return (self.slice_hours - self.current_slice_hours) / self.current_slice_hours * 100

    @property
    def line(self) -> str:
        """The advice in one sentence."""
        head = f"{self.model} x{self.gpus} (static)"
        asked = f"of {hours(self.asked_slice_hours)} asked"
        if self.layout is None:
            return (
                f"{head}: keep today's {self.current}: it would have served "
                f"{hours(self.current_slice_hours)} slice-hours {asked}; "
                "no full layout serves more"
            )
        gain = self.gain_percent
        more = (
            f"{gain:.0f}% more than today's {self.current} ({hours(self.current_slice_hours)})"
            if gain is not None
            else f"where today's {self.current} serves none"
        )
        return (
            f"{head}: the layout {self.layout.label} would have served "
            f"{hours(self.slice_hours)} slice-hours {asked}, {more}"
        )


def hours(value: float) -> str:
    """Slice-hours as a sentence says them: ``412``, ``10.5``."""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}".removesuffix(".0")


def layout_label(profiles: Iterable[str]) -> str:
    """``3g.20gb+2g.10gb+2x1g.5gb``: repeats counted, largest first as given."""
    counted = Counter(profiles)
    parts = [f"{n}x{name}" if n > 1 else name for name, n in counted.items()]
    return "+".join(parts) or "empty"


def _order(model: GpuModel) -> dict[str, int]:
    ranked = sorted(model.profiles, key=lambda p: (-p.memory_slices, -p.compute_slices, p.name))
    return {p.name: i for i, p in enumerate(ranked)}


def sorted_profiles(model: GpuModel, profiles: Iterable[str]) -> tuple[str, ...]:
    """Profiles largest first (memory, then compute), as layouts name them."""
    order = _order(model)
    return tuple(sorted(profiles, key=lambda name: (order.get(name, len(order)), name)))


@lru_cache(maxsize=64)
def full_layouts(model_key: str) -> tuple[Layout, ...]:
    """Every distinct full layout of ``model_key`` (no further instance fits), by
    multiset of profiles, each with one valid placement; ``()`` without MIG.

    Packings are enumerated from the lowest free memory slice: place a profile that
    may start there, or leave the slice empty; a packing is full when no placement
    fits in what is left.
    """
    model = find_model(model_key)
    if model is None or not model.mig_capable:
        return ()
    profiles = [p for p in model.profiles if not p.media]
    found: dict[tuple[str, ...], Layout] = {}

    def fits(p: MigProfile, start: int, used: int, counts: Counter[str]) -> bool:
        return (
            start in p.starts
            and start + p.size <= model.memory_slices
            and not used & slot_mask(start, p.size)
            and counts[p.name] < p.max_count
        )

    def walk(slot: int, used: int, chosen: list[tuple[str, int]], counts: Counter[str]) -> None:
        if slot >= model.memory_slices:
            full = not any(fits(p, s, used, counts) for p in profiles for s in p.starts)
            if full and chosen:
                names = sorted_profiles(model, (name for name, _ in chosen))
                found.setdefault(names, Layout(names, tuple(sorted(chosen, key=lambda c: c[1]))))
            return
        if used >> slot & 1:
            walk(slot + 1, used, chosen, counts)
            return
        for p in profiles:
            if fits(p, slot, used, counts):
                counts[p.name] += 1
                chosen.append((p.name, slot))
                walk(slot + 1, used | slot_mask(slot, p.size), chosen, counts)
                chosen.pop()
                counts[p.name] -= 1
        walk(slot + 1, used, chosen, counts)  # this slice stays empty

    walk(0, 0, [], Counter())
    return tuple(sorted(found.values(), key=lambda layout: layout.profiles))


def _choices(model: GpuModel, ask: Ask) -> tuple[MigProfile, ...]:
    """The profiles of ``model`` that serve ``ask``, the one it needs first."""
    if ask.profile is not None:
        found = model.profile(ask.profile)
        return (found,) if found is not None else ()
    if ask.memory_gb is not None:
        fitting = [p for p in model.profiles if not p.media and nominal_gb(p.name) >= ask.memory_gb]
        return tuple(sorted(fitting, key=lambda p: (p.memory_mib, p.name)))
    return ()


@dataclass(frozen=True)
class _Replayable:
    """Asks resolved for one model: (arrival, end, acceptable profiles, slice-hours)."""

    asks: tuple[tuple[float, float, tuple[str, ...], float], ...]

    @property
    def asked(self) -> float:
        return sum(a[3] for a in self.asks)


def _resolve(model: GpuModel, asks: Sequence[Ask]) -> _Replayable:
    out = []
    for ask in sorted(asks, key=lambda a: a.at):
        options = _choices(model, ask)
        if not options or ask.hours <= 0:
            continue
        worth = profile_slices(model, options[0].name) * ask.hours
        out.append((ask.at, ask.at + ask.hours * 3600, tuple(p.name for p in options), worth))
    return _Replayable(tuple(out))


def replay(counts: Mapping[str, int], asks: _Replayable) -> float:
    """Slice-hours served by instances ``counts`` (profile -> how many), lost otherwise."""
    free_at: dict[str, list[float]] = {name: [0.0] * n for name, n in counts.items() if n > 0}
    served = 0.0
    for at, end, options, worth in asks.asks:
        for name in options:
            heap = free_at.get(name)
            if heap and heap[0] <= at:
                heapq.heapreplace(heap, end)
                served += worth
                break
    return served


def served(model: GpuModel, counts: Mapping[str, int], asks: Sequence[Ask]) -> float:
    """``replay`` for raw asks: what ``counts`` instances of ``model`` would have served."""
    return replay(counts, _resolve(model, asks))


def advise(
    model: GpuModel,
    current: Sequence[Sequence[str]],
    asks: Sequence[Ask],
    max_asks: int = MAX_ASKS,
) -> Advice:
    """The full layout that, on every static GPU of ``model`` (today's layouts in
    ``current``, one list of profiles per GPU), would have served the most of
    ``asks``; "keep today's" when none serves more."""
    notes: list[str] = []
    resolved = _resolve(model, asks)
    total = len(resolved.asks)
    if total > max_asks:
        resolved = _Replayable(resolved.asks[-max_asks:])
        notes.append(f"only the last {max_asks} of {total} requests were replayed")
    gpus = len(current)
    today: Counter[str] = Counter()
    for profiles in current:
        today.update(profiles)
    labels = sorted({layout_label(sorted_profiles(model, p)) for p in current})
    today_label = "; ".join(labels) if labels else "empty"
    today_served = replay(today, resolved)
    layouts = full_layouts(model.key)
    scored = []
    for layout in layouts:
        counts = Counter({name: n * gpus for name, n in layout.counts.items()})
        scored.append((replay(counts, resolved), layout))
    scored.sort(key=lambda s: (-s[0], s[1].profiles))
    best: Layout | None = None
    best_served = today_served
    if scored and scored[0][0] > today_served + 1e-9:
        best_served, best = scored[0]
    if not resolved.asks:
        notes.append("no request in the window could use this model's MIG instances")
    return Advice(
        model=model.key,
        gpus=gpus,
        current=today_label,
        current_slice_hours=today_served,
        layout=best,
        slice_hours=best_served,
        asked_slice_hours=resolved.asked,
        requests=total,
        replayed=len(resolved.asks),
        candidates=len(layouts),
        top=tuple(Scored(layout.label, hours) for hours, layout in scored[:TOP]),
        notes=tuple(notes),
    )
