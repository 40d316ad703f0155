"""GPU slices: every share of a GPU counted in sevenths of a whole GPU.

A MIG instance counts its compute slices x 7 / the model's compute slices (``1g``
to ``7g`` on A100 and H100 count 1 to 7; on A30, whose GPU has 4 compute slices,
``1g`` counts 1.75 and ``4g`` 7); a whole GPU counts 7; a shared fraction counts
its fraction of 7. GPU-hours are slice-hours / 7.
"""

from __future__ import annotations

from collections.abc import Sequence

from sandman.gpu.catalogue import GpuModel, find_model
from sandman.gpu.types import GpuDevice, GpuRequest

WHOLE = 7.0


def model_compute_slices(model: GpuModel) -> int:
    return max((p.compute_slices for p in model.profiles), default=1)


def profile_slices(model: GpuModel, profile: str) -> float:
    found = model.profile(profile)
    if found is None:
        raise ValueError(f"{model.key} has no profile {profile}")
    return found.compute_slices * WHOLE / model_compute_slices(model)


def grant_slices(model_name: str | None, profile: str | None, share: float | None = None) -> float:
    """What one grant counts: a MIG instance, a whole GPU, or a share of one."""
    if share is not None:
        return share * WHOLE
    if profile is None:
        return WHOLE
    model = find_model(model_name or "")
    if model is None or model.profile(profile) is None:
        return WHOLE
    return profile_slices(model, profile)


def request_slices(request: GpuRequest, devices: Sequence[GpuDevice]) -> float:
    """What a request will count before it is placed: the least it can be given here.

    A profile counts as on the first model here that has it; a memory size as the
    smallest profile (or whole GPU) of at least that memory; a shared replica as the
    smallest share here; no GPU counts 0.
    """
    if request.gpu_count is not None:
        return request.gpu_count * WHOLE
    if request.whole:  # a whole GPU of some memory
        return WHOLE
    if request.shared:
        shares = [d.sharing.share for d in devices if d.sharing is not None]
        return min(shares, default=1.0) * WHOLE
    models = [m for m in (find_model(d.model) for d in devices) if m is not None]
    if request.mig_profile is not None:
        for model in models:
            if model.profile(request.mig_profile) is not None:
                return profile_slices(model, request.mig_profile)
        return WHOLE
    if request.gpu_memory_gb is not None:
        fits = [
            profile_slices(m, p.name)
            for m in models
            for p in m.profiles
            if p.memory_gib >= request.gpu_memory_gb * 0.93 and not p.media
        ]
        return min(fits, default=WHOLE)
    if request.mig_instance_uuid is not None:
        for device in devices:
            for instance in device.instances:
                if instance.uuid == request.mig_instance_uuid:
                    found = find_model(device.model)
                    if found is not None and found.profile(instance.profile):
                        return profile_slices(found, instance.profile)
        return WHOLE
    return 0.0


def words(slices: float) -> str:
    """``3`` or ``1.75``: a count of slices as people read it."""
    return f"{slices:g}" if slices == int(slices) else f"{slices:.2f}".rstrip("0")


def gpu_hours(slice_hours: float) -> float:
    return slice_hours / WHOLE
