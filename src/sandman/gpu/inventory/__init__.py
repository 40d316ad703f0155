"""GPU inventories (``simulated``, ``nvml``) behind one factory."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sandman.errors import ConfigurationError
from sandman.gpu.types import GpuInventory, GpuSharing, MigMode

__all__ = ["make_inventory"]


def make_inventory(
    backend: str,
    topology: str | None = None,
    state_path: Path | None = None,
    *,
    seed: str = "sandman",
    default_mode: MigMode = MigMode.DYNAMIC,
    modes: Mapping[str, MigMode] | None = None,
    sharing: Mapping[str, GpuSharing] | None = None,
) -> GpuInventory:
    """Build the configured inventory.

    ``simulated`` needs ``topology`` (a preset name or YAML path) and keeps its
    instances in ``state_path`` when given; ``nvml`` reads the real GPUs, with
    ``default_mode``/``modes`` saying which MIG GPUs are static or dynamic, and
    ``sharing`` (``topology.parse_sharing_setting``) which GPUs without MIG are shared;
    a simulated GPU's sharing is in its topology.
    """
    if backend == "simulated":
        from sandman.gpu.inventory.simulated import SimulatedInventory

        if not topology:
            raise ConfigurationError("the simulated GPU backend needs a topology (preset or file)")
        return SimulatedInventory(topology, state_path=state_path, seed=seed)
    if backend == "nvml":
        from sandman.gpu.inventory.nvml import NvmlInventory

        return NvmlInventory(default_mode=default_mode, modes=modes, sharing=sharing)
    raise ConfigurationError(f"unknown GPU backend {backend!r}; use simulated or nvml")
