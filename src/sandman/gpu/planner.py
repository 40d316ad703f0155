"""Where a session's GPU share goes: a pure function of request, devices and claims.

The planner never touches hardware. It sees the inventory's devices and the
database's claims, and returns ``Allocation``s; the caller claims them (see
``claim_units``) and, for ``mig_create``, asks the inventory to create the
instance. Keeping this pure makes the placement policy testable exhaustively
and lets the benchmark replay thousands of sessions in seconds.

Placement policy (``sandman.gpu.placement``). On dynamic GPUs every valid
(GPU, start) is scored by the demand-weighted capacity it destroys, and the
least damaging wins (then the fullest GPU, the lowest index and start); the
demand weights come from the caller (``demand=``, learnt online by the session
service) or a prior. A free pre-created instance on a static GPU is taken
before creating one, from the busiest static GPU, so untouched GPUs stay whole.
Whole-GPU requests go to GPUs without MIG, and a request the smallest fit of
which would take a whole MIG GPU (a ``7g``) takes a free GPU without MIG of
enough memory instead, leaving the MIG GPU to smaller requests. Every grant
says why in ``Allocation.reason``.

Shared GPUs (time-slicing or MPS, never MIG) are handed out in replicas: a
``shared`` request takes a free replica on the fullest shared GPU that still has
one, so empty GPUs stay whole for whole-GPU requests; a shared GPU with any
replica held is never given whole, and a whole grant of a shared GPU holds every
replica's unit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from sandman.errors import CapacityExhausted, InvalidRequest, NotFound
from sandman.gpu.catalogue import (
    MIB_PER_GIB,
    GpuModel,
    all_profile_names,
    find_model,
    nominal_gb,
    slot_mask,
)
from sandman.gpu.placement import (
    PRIOR,
    DemandWeights,
    MigGpu,
    best_start,
    place_mig,
    placements_left,
    ranked_profiles,
)
from sandman.gpu.sharing import share_note, sharing_summary
from sandman.gpu.types import (
    Allocation,
    Claim,
    GpuDevice,
    GpuRequest,
    GpuSharing,
    MigInstance,
    MigMode,
)

__all__ = [
    "best_start",
    "claim_for",
    "claim_units",
    "free_summary",
    "plan",
]

REPLICA_UNIT = "replica:"  # claim unit of one replica of a shared GPU: replica:<k>


@dataclass
class _Gpu:
    """What the planner knows about one device after applying the claims."""

    device: GpuDevice
    model: GpuModel | None
    used: int = 0  # memory slices occupied (bit i = slice i)
    counts: dict[str, int] = field(default_factory=dict)
    media_used: bool = False
    free_instances: list[MigInstance] = field(default_factory=list)  # static GPUs only
    whole_free: bool = False  # disabled GPUs only
    claimed: set[str] = field(default_factory=set)  # instance UUIDs a claim holds
    whole_held: bool = False  # a grant holds the whole GPU (disabled GPUs only)
    replicas_held: set[int] = field(default_factory=set)  # shared GPUs' replicas held

    @property
    def mode(self) -> MigMode:
        return self.device.mig_mode

    @property
    def label(self) -> str:
        return self.device.uuid[:12]

    @property
    def sharing(self) -> GpuSharing | None:
        return self.device.sharing if self.mode is MigMode.DISABLED else None

    @property
    def free_replicas(self) -> list[int]:
        """Replicas a ``shared`` request could take now (none while held whole)."""
        if self.sharing is None or self.whole_held:
            return []
        return [k for k in range(self.sharing.replicas) if k not in self.replicas_held]

    @property
    def free_slices(self) -> int:
        total = self.model.memory_slices if self.model else 0
        return total - bin(self.used).count("1")


def _claimed(inst: MigInstance, claims: Sequence[Claim]) -> bool:
    for c in claims:
        if c.instance_uuid is not None:
            if c.instance_uuid == inst.uuid:
                return True
        elif c.start == inst.start and c.profile == inst.profile:
            return True
    return False


def _build(devices: Sequence[GpuDevice], claims: Sequence[Claim]) -> list[_Gpu]:
    by_gpu: dict[str, list[Claim]] = {}
    for c in claims:
        by_gpu.setdefault(c.gpu_uuid, []).append(c)
    gpus: list[_Gpu] = []
    for dev in sorted(devices, key=lambda d: d.index):
        mine = by_gpu.get(dev.uuid, [])
        g = _Gpu(dev, find_model(dev.model))
        if dev.mig_mode is MigMode.DISABLED:
            g.whole_free = not mine
            g.whole_held = any(c.replica is None for c in mine)
            g.replicas_held = {c.replica for c in mine if c.replica is not None}
            gpus.append(g)
            continue
        for inst in dev.instances:
            _occupy(g, inst.profile, inst.start, inst.size)
            if _claimed(inst, mine):
                g.claimed.add(inst.uuid)
            elif dev.mig_mode is MigMode.STATIC:
                g.free_instances.append(inst)
        if dev.mig_mode is MigMode.DYNAMIC:
            present = dev.instances
            for c in mine:
                if c.profile is None or any(_matches(c, i) for i in present):
                    continue  # already counted through the instance it names
                _occupy(g, c.profile, c.start, c.size)
        gpus.append(g)
    return gpus


def _matches(c: Claim, inst: MigInstance) -> bool:
    if c.instance_uuid is not None:
        return c.instance_uuid == inst.uuid
    return c.start == inst.start and c.profile == inst.profile


def _occupy(g: _Gpu, profile_name: str, start: int, size: int) -> None:
    g.used |= slot_mask(start, size)
    g.counts[profile_name] = g.counts.get(profile_name, 0) + 1
    if profile_name.endswith("+me"):
        g.media_used = True


# ---- public API --------------------------------------------------------------


def plan(
    request: GpuRequest,
    devices: Sequence[GpuDevice],
    claims: Sequence[Claim],
    *,
    default_profile: str | None = "1g.5gb",
    allow_fallback: bool = True,
    demand: DemandWeights = PRIOR,
) -> list[Allocation]:
    """Decide which GPU share(s) satisfy ``request``; raise a domain error if none can.

    ``demand`` is each MIG shape's share of the requests expected (a
    ``DemandRecorder``'s weights); the placement keeps room for what is asked most.

    Returns ``[]`` when the request asks for no GPU. Raises ``InvalidRequest`` for
    a malformed request or a profile no GPU here could ever provide,
    ``CapacityExhausted`` (saying what is free) when the GPUs are busy, and
    ``NotFound`` for an unknown ``mig_instance_uuid``.
    """
    fields = [
        request.mig_profile,
        request.mig_instance_uuid,
        request.gpu_count,
        request.gpu_memory_gb,
        True if request.shared else None,
    ]
    if sum(f is not None for f in fields) > 1:
        raise InvalidRequest(
            "set at most one of mig_profile, mig_instance_uuid, gpu_count, gpu_memory_gb, shared"
        )
    if request.whole and request.gpu_memory_gb is None:
        raise InvalidRequest("whole needs gpu_memory_gb: the least memory of the whole GPU")
    gpus = _build(devices, claims)
    if request.shared:
        return [_plan_shared(gpus)]
    if request.mig_instance_uuid is not None:
        return [_plan_instance(request.mig_instance_uuid, gpus)]
    if request.gpu_count is not None:
        return _plan_whole(request.gpu_count, gpus)
    if request.gpu_memory_gb is not None:
        return [_plan_memory(request.gpu_memory_gb, gpus, demand, whole_only=request.whole)]
    if request.mig_profile is not None:
        name = request.mig_profile.strip().lower()
        return [_plan_profile(name, gpus, allow_fallback, demand)]
    if default_profile is None:
        return []
    if not any(g.model and g.model.profile(default_profile) for g in gpus):
        # The default names one model's profile (1g.5gb is A100-40GB's); on other
        # machines give the smallest share of at least the same memory instead.
        return [_plan_memory(float(nominal_gb(default_profile) or 1), gpus, demand)]
    return [_plan_profile(default_profile, gpus, allow_fallback, demand)]


def _plan_instance(uuid: str, gpus: list[_Gpu]) -> Allocation:
    for g in gpus:
        for inst in g.device.instances:
            if inst.uuid != uuid:
                continue
            if inst.uuid in g.claimed or g.mode is MigMode.DISABLED:
                raise CapacityExhausted(
                    f"MIG instance {uuid} ({inst.profile} on {g.label}) is in use; "
                    f"free now: {_describe_free(gpus)}"
                )
            return _from_instance(g, inst)
    raise NotFound(f"no MIG instance {uuid}")


def _from_instance(g: _Gpu, inst: MigInstance, reason: str | None = None) -> Allocation:
    return Allocation(
        gpu_uuid=g.device.uuid,
        kind="mig_instance",
        profile=inst.profile,
        start=inst.start,
        size=inst.size,
        memory_mb=inst.memory_mb,
        instance_uuid=inst.uuid,
        reason=reason,
    )


def _whole(
    g: _Gpu, *, fallback: bool = False, note: str | None = None, reason: str | None = None
) -> Allocation:
    size = g.model.memory_slices if g.model and g.model.memory_slices else 1
    return Allocation(
        gpu_uuid=g.device.uuid,
        kind="whole_gpu",
        profile=None,
        start=0,
        size=size,
        memory_mb=g.device.memory_total_mb,
        fallback=fallback,
        notes=(note,) if note else (),
        sharing=g.sharing,
        reason=reason or _whole_reason(g),
    )


def _name(g: _Gpu) -> str:
    """A GPU as operators know it (nvidia-smi's index)."""
    return f"GPU {g.device.index}"


def _whole_reason(g: _Gpu) -> str:
    why = "a GPU without MIG, so MIG GPUs stay whole for smaller requests"
    if g.sharing is not None:
        why += " (a shared GPU: every GPU without sharing was taken)"
    return f"whole {_name(g)}: {why}"


def _unshared_first(g: _Gpu) -> tuple[bool, int]:
    """Whole grants take unshared GPUs first, keeping shared ones for shared requests."""
    return (g.sharing is not None, g.device.index)


def _plan_shared(gpus: list[_Gpu]) -> Allocation:
    shared = [g for g in gpus if g.sharing is not None]
    if not shared:
        raise InvalidRequest(
            "no GPU on this machine is shared (time-slicing or MPS); ask for a MIG profile "
            "or a whole GPU instead"
        )
    # The fullest shared GPU with a replica free: partly used GPUs fill up first, and
    # of empty ones the one with most replicas, so the fewest GPUs stop being whole.
    open_ = [(g, g.sharing) for g in shared if g.sharing is not None and g.free_replicas]
    if not open_:
        raise CapacityExhausted(
            f"every replica of the shared GPUs is held: free now: {_describe_free(gpus)}"
        )
    g, sharing = min(
        open_,
        key=lambda x: (
            len(x[0].free_replicas) / x[1].replicas,
            -x[1].replicas,
            x[0].device.index,
        ),
    )
    replica = g.free_replicas[0]
    total = g.device.memory_total_mb
    memory = total // sharing.replicas if sharing.mode == "mps" else total
    return Allocation(
        gpu_uuid=g.device.uuid,
        kind="gpu_share",
        profile=None,
        start=replica,
        size=1,
        memory_mb=memory,
        notes=(share_note(sharing, memory),),
        replica=replica,
        sharing=sharing,
    )


def _plan_whole(count: int, gpus: list[_Gpu]) -> list[Allocation]:
    if count < 0:
        raise InvalidRequest(f"gpu_count must be 0 or more, not {count}")
    if count == 0:
        return []
    free = sorted(
        (g for g in gpus if g.mode is MigMode.DISABLED and g.whole_free), key=_unshared_first
    )
    if len(free) < count:
        whole_total = sum(1 for g in gpus if g.mode is MigMode.DISABLED)
        if whole_total < count:
            raise InvalidRequest(
                f"{count} whole GPUs requested but this machine has {whole_total} GPUs without MIG"
            )
        raise CapacityExhausted(f"no {count} free whole GPUs: free now: {_describe_free(gpus)}")
    return [_whole(g) for g in free[:count]]


def _gpu_gb(g: _Gpu) -> float:
    if g.model is not None:
        return float(g.model.memory_gb)
    return g.device.memory_total_mb / MIB_PER_GIB


def _try_mig(name: str, gpus: list[_Gpu], demand: DemandWeights) -> Allocation | None:
    """A free pre-created instance on a static GPU, else the best new one on a dynamic GPU.

    Taking what exists costs dynamic GPUs nothing; of static GPUs one already in use
    gives it (the one with the fewest free instances), so untouched ones stay whole.
    """
    static = [
        (not g.claimed, len(g.free_instances), g.device.index, inst.start, g, inst)
        for g in gpus
        if g.mode is MigMode.STATIC
        for inst in g.free_instances
        if inst.profile == name
    ]
    if static:
        *_, g, inst = min(static, key=lambda x: x[:4])
        untouched = sum(1 for h in gpus if h.mode is MigMode.STATIC and not h.claimed)
        why = f"a free pre-created {name} on {_name(g)}"
        if g.claimed:
            why += ", a static GPU already in use"
            if untouched:
                why += f"; {untouched} untouched static GPU(s) kept whole"
        else:
            why += " (no static GPU in use had one free)"
        return _from_instance(g, inst, reason=why)
    dynamic = [g for g in gpus if g.mode is MigMode.DYNAMIC and g.model is not None]
    views = [
        MigGpu(g.device.index, _name(g), g.model, g.used, g.counts, g.media_used)
        for g in dynamic
        if g.model is not None
    ]
    chosen = place_mig(name, views, demand)
    if chosen is None:
        return None
    g = dynamic[chosen.gpu]
    p = g.model.profile(name) if g.model else None
    assert p is not None
    return Allocation(
        gpu_uuid=g.device.uuid,
        kind="mig_create",
        profile=p.name,
        start=chosen.start,
        size=p.size,
        memory_mb=p.memory_mib,
        reason=chosen.reason,
    )


def _plan_profile(
    name: str, gpus: list[_Gpu], allow_fallback: bool, demand: DemandWeights
) -> Allocation:
    offered = any(
        g.model is not None and g.model.profile(name) and not g.device.advertised_only for g in gpus
    ) or any(inst.profile == name for g in gpus for inst in g.device.instances)
    if name not in all_profile_names() and not offered:
        raise InvalidRequest(f"unknown MIG profile {name!r}")
    if offered:
        alloc = _try_mig(name, gpus, demand)
        if alloc is not None:
            return alloc
    need_gb = nominal_gb(name)
    if allow_fallback:
        whole = [g for g in gpus if g.mode is MigMode.DISABLED and _gpu_gb(g) >= need_gb]
        free = [g for g in whole if g.whole_free]
        if free:
            g = min(free, key=lambda x: (x.device.memory_total_mb, *_unshared_first(x)))
            model = g.model.display_name if g.model else g.device.name
            note = f"no free {name} MIG instance; a whole {model} is given instead"
            reason = f"whole {_name(g)}: no room for {name} on a MIG GPU"
            return _whole(g, fallback=True, note=note, reason=reason)
        offered = offered or bool(whole)
    if not offered:
        raise InvalidRequest(f"no GPU on this machine offers MIG profile {name}")
    raise CapacityExhausted(f"no free {name}: free now: {_describe_free(gpus)}")


def _plan_memory(
    gb: float, gpus: list[_Gpu], demand: DemandWeights = PRIOR, whole_only: bool = False
) -> Allocation:
    """The smallest free share with ``gb`` of memory: a MIG instance or a whole GPU, or
    (``whole_only``) only a whole GPU. A MIG instance that would take a whole MIG GPU
    yields to a free GPU without MIG that has the memory: the MIG GPU stays for the
    smaller requests only it can serve."""
    if gb <= 0:
        raise InvalidRequest(f"gpu_memory_gb must be positive, not {gb}")
    names: dict[str, int] = {}
    for g in gpus:
        if whole_only or g.mode is MigMode.DISABLED or g.model is None:
            continue
        for p in g.model.profiles:
            if not p.media and p.memory_gb >= gb:
                names[p.name] = min(names.get(p.name, p.memory_mib), p.memory_mib)
        for inst in g.free_instances:
            if not inst.profile.endswith("+me") and nominal_gb(inst.profile) >= gb:
                names.setdefault(inst.profile, inst.memory_mb)
    mig: Allocation | None = None
    for name in sorted(names, key=lambda n: (names[n], n)):
        mig = _try_mig(name, gpus, demand)
        if mig is not None:
            break
    whole = [g for g in gpus if g.mode is MigMode.DISABLED and g.whole_free and _gpu_gb(g) >= gb]
    best_whole = min(
        whole, key=lambda g: (g.device.memory_total_mb, *_unshared_first(g)), default=None
    )
    if mig is not None and (
        best_whole is None
        or (mig.memory_mb <= best_whole.device.memory_total_mb and not _takes_all(mig, gpus))
    ):
        return mig
    if best_whole is not None:
        return _whole(best_whole)
    possible = bool(names) or any(g.mode is MigMode.DISABLED and _gpu_gb(g) >= gb for g in gpus)
    if not possible:
        raise InvalidRequest(f"no GPU on this machine has {gb:g} GB of memory")
    raise CapacityExhausted(f"no free GPU share with {gb:g} GB: free now: {_describe_free(gpus)}")


def _takes_all(alloc: Allocation, gpus: list[_Gpu]) -> bool:
    """A new instance that spans every memory slice of its (MIG) GPU."""
    for g in gpus:
        if g.device.uuid == alloc.gpu_uuid and g.model is not None:
            return alloc.kind == "mig_create" and alloc.size >= g.model.memory_slices
    return False


# ---- descriptions and claims -------------------------------------------------


def _largest_creatable(g: _Gpu) -> list[tuple[str, int]]:
    """Per profile (largest first), how many could still be created on a dynamic GPU."""
    if g.model is None:
        return []
    pot = placements_left(g.model, g.used, g.counts)
    return [(p.name, n) for p, n in zip(ranked_profiles(g.model), pot, strict=True) if n > 0]


def _describe_free(gpus: list[_Gpu]) -> str:
    parts: list[str] = []
    whole: Counter[str] = Counter()
    for g in gpus:
        if g.mode is MigMode.DISABLED:
            if g.sharing is not None and g.replicas_held and g.free_replicas:
                parts.append(
                    f"{len(g.free_replicas)} of {g.sharing.replicas} shared replicas on {g.label}"
                )
            if g.whole_free:
                whole[g.model.display_name if g.model else g.device.name] += 1
        elif g.mode is MigMode.STATIC:
            per = Counter(i.profile for i in g.free_instances)
            for name, n in sorted(per.items()):
                parts.append(f"{n}x {name} on {g.label}")
        else:
            creatable = _largest_creatable(g)
            if creatable:
                name, n = creatable[0]
                parts.append(f"room for {n}x {name} on {g.label}")
    for name, n in sorted(whole.items()):
        parts.append(f"{n}x whole {name.removeprefix('NVIDIA ').removeprefix('GeForce ')}")
    return "; ".join(parts) if parts else "nothing"


def free_summary(devices: Sequence[GpuDevice], claims: Sequence[Claim]) -> dict[str, object]:
    """Free capacity per GPU, for stats endpoints and error messages.

    ``{"gpus": {uuid: {...}}, "text": "2x 1g.5gb on GPU-...; ..."}``.
    """
    gpus = _build(devices, claims)
    per: dict[str, object] = {}
    for g in gpus:
        entry: dict[str, object] = {
            "index": g.device.index,
            "model": g.device.model,
            "mig_mode": g.mode.value,
        }
        if g.mode is MigMode.DISABLED:
            entry["whole_free"] = g.whole_free
            if g.sharing is not None:
                entry["sharing"] = sharing_summary(g.sharing, len(g.replicas_held))
        else:
            total = g.model.memory_slices if g.model else 0
            entry["memory_slices_total"] = total
            entry["memory_slices_free"] = g.free_slices
            entry["free_instances"] = [
                {"uuid": i.uuid, "profile": i.profile, "start": i.start} for i in g.free_instances
            ]
            if g.mode is MigMode.DYNAMIC:
                entry["creatable"] = dict(_largest_creatable(g))
        per[g.device.uuid] = entry
    return {"gpus": per, "text": _describe_free(gpus)}


def claim_units(allocation: Allocation) -> list[str]:
    """The unique keys a grant holds on its GPU.

    A unique (gpu_uuid, unit) constraint over these makes overlapping grants
    impossible even if two planners race: ``slot:<i>`` per memory slice of a MIG
    grant, ``media`` for a ``+me`` profile (one per GPU), ``gpu`` for a whole GPU,
    ``replica:<k>`` for a replica of a shared GPU (a whole grant of a shared GPU
    holds them all, so it excludes every replica and they exclude it).
    """
    if allocation.kind == "whole_gpu":
        shared = allocation.sharing.replicas if allocation.sharing else 0
        return ["gpu", *(f"{REPLICA_UNIT}{k}" for k in range(shared))]
    if allocation.kind == "gpu_share":
        return [f"{REPLICA_UNIT}{allocation.replica}"]
    units = [f"slot:{i}" for i in range(allocation.start, allocation.start + allocation.size)]
    if allocation.profile is not None and allocation.profile.endswith("+me"):
        units.append("media")
    return units


def claim_for(allocation: Allocation, instance_uuid: str | None = None) -> Claim:
    """The ``Claim`` that records ``allocation`` once granted."""
    return Claim(
        gpu_uuid=allocation.gpu_uuid,
        start=allocation.start,
        size=allocation.size,
        profile=allocation.profile,
        instance_uuid=instance_uuid or allocation.instance_uuid,
        replica=allocation.replica,
    )
