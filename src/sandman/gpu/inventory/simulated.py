"""A GPU inventory without GPUs: the machine described by a topology.

It exists so that everything above the inventory (planner, sessions, API,
gateway) runs unchanged on machines without NVIDIA hardware, in CI and in
demos. It keeps the real rules: placements are checked against the catalogue
exactly as the driver would refuse them, UUIDs have NVIDIA's format and stay
the same across restarts (derived from ``seed`` and position), and with a
``state_path`` created instances survive a restart like real ones do.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sandman.errors import ConfigurationError, InvalidLayout, InvalidRequest, NotFound
from sandman.gpu.catalogue import profile, validate_layout
from sandman.gpu.topology import GpuSpec, Topology, load_topology
from sandman.gpu.types import GpuDevice, MigInstance, MigMode

__all__ = ["SimulatedInventory", "nvidia_uuid"]

_STATE_VERSION = 1


def nvidia_uuid(prefix: str, *parts: object) -> str:
    """A stable ``GPU-``/``MIG-`` UUID in NVIDIA's 8-4-4-4-12 form from ``parts``."""
    h = hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()
    return f"{prefix}-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


@dataclass
class _SimGpu:
    index: int
    uuid: str
    spec: GpuSpec
    instances: list[MigInstance] = field(default_factory=list)
    serial: int = 0  # instances ever created; makes each new MIG UUID unique


class SimulatedInventory:
    """``GpuInventory`` backed by a topology; optionally persisted as JSON."""

    backend = "simulated"
    simulated = True

    def __init__(
        self,
        topology: Topology | str,
        state_path: Path | None = None,
        seed: str = "sandman",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._topology = load_topology(topology) if isinstance(topology, str) else topology
        self._state_path = state_path
        self._seed = seed
        self._clock = clock
        self._lock = threading.Lock()
        self._gpus = [
            _SimGpu(i, nvidia_uuid("GPU", seed, "gpu", i), spec)
            for i, spec in enumerate(self._topology.gpus)
        ]
        for gpu in self._gpus:
            for inst in gpu.spec.instances:
                gpu.instances.append(self._new_instance(gpu, inst.profile, inst.start))
        if state_path is not None and state_path.exists():
            self._load(state_path)

    # ---- GpuInventory ---------------------------------------------------------

    def devices(self) -> list[GpuDevice]:
        with self._lock:
            now = self._clock()
            return [self._device(g, now) for g in self._gpus]

    def create_instance(self, gpu_uuid: str, profile_name: str, start: int) -> MigInstance:
        with self._lock:
            gpu = self._find(gpu_uuid)
            if gpu.spec.mig is MigMode.DISABLED:
                raise InvalidRequest(f"MIG is disabled on GPU {gpu_uuid}")
            layout = [(i.profile, i.start) for i in gpu.instances]
            validate_layout(gpu.spec.model, [*layout, (profile_name, start)])
            inst = self._new_instance(gpu, profile_name, start)
            gpu.instances.append(inst)
            self._save()
            return inst

    def destroy_instance(self, gpu_uuid: str, instance_uuid: str) -> None:
        with self._lock:
            gpu = self._find(gpu_uuid)
            kept = [i for i in gpu.instances if i.uuid != instance_uuid]
            if len(kept) != len(gpu.instances):
                gpu.instances = kept
                self._save()

    def close(self) -> None:
        """Nothing to release; present for the contract."""

    # ---- internals -----------------------------------------------------------

    def _find(self, gpu_uuid: str) -> _SimGpu:
        for g in self._gpus:
            if g.uuid == gpu_uuid:
                return g
        raise NotFound(f"no GPU {gpu_uuid}")

    def _new_instance(self, gpu: _SimGpu, profile_name: str, start: int) -> MigInstance:
        p = profile(gpu.spec.model, profile_name)
        taken = {i.gpu_instance_id for i in gpu.instances}
        gi = next(n for n in range(1, 64) if n not in taken)
        gpu.serial += 1
        return MigInstance(
            uuid=nvidia_uuid("MIG", self._seed, "mig", gpu.index, gpu.serial),
            profile=p.name,
            start=start,
            size=p.size,
            memory_mb=p.memory_mib,
            gpu_instance_id=gi,
            compute_instance_id=0,
        )

    def _device(self, g: _SimGpu, now: float) -> GpuDevice:
        """Metrics that look alive: a slow wave per GPU plus load from its instances."""
        model = g.spec.model
        phase = (g.index * 1.7 + now / 30.0) % (2 * math.pi)
        wave = math.sin(phase)
        busy = min(95, 3 + 12 * len(g.instances) + int(4 * wave + 4))
        idle_w = model.power_limit_w * 0.12
        if g.spec.mig is MigMode.DISABLED:
            used = 2 + int(256 * (wave + 1))
        else:
            used = sum(i.memory_mb for i in g.instances)
        return GpuDevice(
            index=g.index,
            uuid=g.uuid,
            name=model.display_name,
            model=model.key,
            memory_total_mb=model.memory_mib,
            memory_used_mb=min(used, model.memory_mib),
            utilization_percent=busy,
            temperature_c=int(31 + busy * 0.4 + wave),
            power_usage_w=round(idle_w + (model.power_limit_w - idle_w) * busy / 100, 1),
            power_limit_w=model.power_limit_w,
            mig_mode=g.spec.mig,
            instances=tuple(sorted(g.instances, key=lambda i: i.start)),
            simulated=True,
            sharing=g.spec.sharing,
        )

    def _save(self) -> None:
        """Write all instances atomically (temp file + os.replace) so a crash never
        leaves half a state file behind."""
        if self._state_path is None:
            return
        state = {
            "version": _STATE_VERSION,
            "seed": self._seed,
            "gpus": {
                g.uuid: {
                    "serial": g.serial,
                    "instances": [
                        {
                            "uuid": i.uuid,
                            "profile": i.profile,
                            "start": i.start,
                            "gpu_instance_id": i.gpu_instance_id,
                            "compute_instance_id": i.compute_instance_id,
                        }
                        for i in g.instances
                    ],
                }
                for g in self._gpus
            },
        }
        path = self._state_path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(state, fh, indent=2, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _load(self, path: Path) -> None:
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            if state.get("version") != _STATE_VERSION:
                raise ValueError(f"unsupported version {state.get('version')!r}")
            saved = state["gpus"]
            for g in self._gpus:
                entry = saved.get(g.uuid)
                if entry is None:
                    continue  # a GPU added to the topology since the last run
                instances = [
                    MigInstance(
                        uuid=str(i["uuid"]),
                        profile=str(i["profile"]),
                        start=int(i["start"]),
                        size=profile(g.spec.model, str(i["profile"])).size,
                        memory_mb=profile(g.spec.model, str(i["profile"])).memory_mib,
                        gpu_instance_id=int(i["gpu_instance_id"]),
                        compute_instance_id=int(i["compute_instance_id"]),
                    )
                    for i in entry["instances"]
                ]
                validate_layout(g.spec.model, [(i.profile, i.start) for i in instances])
                g.instances = instances
                g.serial = max(int(entry.get("serial", 0)), g.serial)
        except (OSError, ValueError, KeyError, TypeError, InvalidLayout) as exc:
            raise ConfigurationError(f"cannot load simulated GPU state {path}: {exc}") from exc
