"""NVIDIA GPU models and their MIG geometry, as pure data.

Everything Sandman decides about MIG (which profile fits where, what a request
may ask for) is checked against these tables, so they must match the hardware
exactly; a wrong placement here becomes a failed ``nvmlDeviceCreateGpuInstance``
in production. Sources are cited beside each table. NVIDIA's go-nvml mock
tables are deliberately not used: their H100 placements are wrong.

Placement geometry (all MIG models with 8 memory slices share it):

* ``1g`` (1 memory slice): may start at 0..6, never at 7;
* ``1g`` with 2 memory slices (``1g.10gb`` on A100-40GB): 0, 2, 4, 6;
* ``2g`` (2 slices): 0, 2, 4;
* ``3g`` (4 memory slices, not 3): 0 or 4;
* ``4g`` (4 slices): 0 only;
* ``7g`` (all 8 slices): 0 only.

Source: NVIDIA Multi-Instance GPU User Guide, "Supported MIG Profiles"
(https://docs.nvidia.com/datacenter/tesla/mig-user-guide/supported-mig-profiles.html)
and the ``nvidia-smi mig -lgipp`` listing in "Getting Started with MIG"
(https://docs.nvidia.com/datacenter/tesla/mig-user-guide/getting-started-with-mig.html).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from sandman.errors import InvalidLayout, UnknownGpuModel

MIB_PER_GIB = 1024


@dataclass(frozen=True)
class MigProfile:
    """One GPU instance profile of one model (a row of ``nvidia-smi mig -lgip``)."""

    name: str  # "1g.5gb"
    profile_id: int  # the ID column of -lgip (NVML nvmlGpuInstanceProfileInfo_t.id)
    compute_slices: int
    memory_slices: int  # the placement size
    memory_gib: float  # the Memory GiB column of -lgip
    max_count: int  # Instances Total column of -lgip
    starts: tuple[int, ...]  # allowed placement starts (in memory slices)

    @property
    def size(self) -> int:
        return self.memory_slices

    @property
    def memory_mib(self) -> int:
        return round(self.memory_gib * MIB_PER_GIB)

    @property
    def memory_gb(self) -> int:
        """The nominal size in the profile name (``3g.20gb`` -> 20); what users ask by."""
        return nominal_gb(self.name)

    @property
    def media(self) -> bool:
        """``+me`` profiles hold the GPU's single set of media engines."""
        return self.name.endswith("+me")


@dataclass(frozen=True)
class GpuModel:
    """A GPU model: whole-GPU facts plus, for MIG-capable models, its profiles."""

    key: str  # catalogue key, e.g. "A100-40GB"
    names: tuple[str, ...]  # as nvidia-smi prints them; the first is the canonical one
    aliases: tuple[str, ...]
    architecture: str
    memory_mib: int
    power_limit_w: float
    memory_slices: int = 0  # 0 for models without MIG
    profiles: tuple[MigProfile, ...] = ()

    @property
    def mig_capable(self) -> bool:
        return bool(self.profiles)

    @property
    def display_name(self) -> str:
        return self.names[0]

    @property
    def memory_gb(self) -> int:
        return round(self.memory_mib / MIB_PER_GIB)

    def profile(self, name: str) -> MigProfile | None:
        for p in self.profiles:
            if p.name == name.strip().lower():
                return p
        return None

    def profile_by_id(self, profile_id: int) -> MigProfile | None:
        for p in self.profiles:
            if p.profile_id == profile_id:
                return p
        return None


_NOMINAL = re.compile(r"^\d+g\.(\d+)gb")


def nominal_gb(profile_name: str) -> int:
    """The GB figure in a profile name; 0 when the name has none."""
    m = _NOMINAL.match(profile_name)
    return int(m.group(1)) if m else 0


_ONE = (0, 1, 2, 3, 4, 5, 6)  # a 1-slice 1g never starts at slot 7
_EVEN4 = (0, 2, 4, 6)
_EVEN3 = (0, 2, 4)
_HALVES = (0, 4)


def _eight_slice(
    sizes: tuple[str, str, str, str, str, str, str], gib: tuple[float, ...]
) -> tuple[MigProfile, ...]:
    """The seven standard profiles of an 8-memory-slice model (A100, H100, H200, B200...).

    ``sizes`` names them in -lgip order (1g, 1g+me, 1g double memory, 2g, 3g, 4g, 7g);
    ``gib`` holds the memory of the 1-slice, 2-slice, 4-slice and 8-slice profiles.
    IDs 19/20/15/14/9/5/0 are the same on every 8-slice model (MIG User Guide,
    "Getting Started with MIG", -lgip listings for A100 and H100).
    """
    g1, g2, g4, g8 = gib
    one, one_me, one_big, two, three, four, seven = sizes
    return (
        MigProfile(one, 19, 1, 1, g1, 7, _ONE),
        MigProfile(one_me, 20, 1, 1, g1, 1, _ONE),
        MigProfile(one_big, 15, 1, 2, g2, 4, _EVEN4),
        MigProfile(two, 14, 2, 2, g2, 3, _EVEN3),
        MigProfile(three, 9, 3, 4, g4, 2, _HALVES),
        MigProfile(four, 5, 4, 4, g4, 1, (0,)),
        MigProfile(seven, 0, 7, 8, g8, 1, (0,)),
    )


# Memory figures (GiB) are the -lgip "Memory GiB" column where NVIDIA or driver
# output publishes it (A100-40GB: MIG User Guide -lgip example; H100-80GB and A30:
# driver -lgip output). For H100 NVL, H200, GH200 and B200 the guide gives only
# memory fractions (1/8, 2/8, 4/8, full); the GiB values below are that fraction
# of usable memory, rounded as nvidia-smi does. The NVML backend reports the
# driver's own figures for real devices, so these only feed the simulator and
# the gpu_memory_gb matching.
_MIG_MODELS: tuple[GpuModel, ...] = (
    # A100-SXM4-40GB / A100-PCIE-40GB: MIG User Guide, "A100 MIG Profiles" table
    # and the -lgip / -lgipp examples in "Getting Started with MIG".
    GpuModel(
        "A100-40GB",
        ("NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB"),
        ("A100-SXM4-40GB", "A100-PCIE-40GB", "A100 PCIe 40GB", "A100-40GB", "A100"),
        "Ampere",
        40960,
        400.0,
        8,
        _eight_slice(
            ("1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"),
            (4.75, 9.625, 19.5, 39.25),
        ),
    ),
    # A100-SXM4-80GB / A100 80GB PCIe: same table, names scaled by memory
    # ("For A100-SXM4-80GB, the profile names will change according to the memory
    # proportion" - MIG User Guide, "A100 MIG Profiles").
    GpuModel(
        "A100-80GB",
        ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe", "NVIDIA A100-PCIE-80GB"),
        ("A100-SXM4-80GB", "A100-PCIE-80GB", "A100 PCIe 80GB", "A100-80GB"),
        "Ampere",
        81920,
        400.0,
        8,
        _eight_slice(
            ("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
            (9.5, 19.5, 39.25, 78.5),
        ),
    ),
    # H100-SXM5 / H100-PCIE 80GB: MIG User Guide, "H100 MIG Profiles"; memory from
    # -lgip on H100 80GB HBM3 (9.75 / 19.62 / 39.50 / 79.25 GiB).
    GpuModel(
        "H100-80GB",
        ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H800"),
        ("H100-SXM5-80GB", "H100-PCIE-80GB", "H100 PCIe 80GB", "H100-80GB", "H100"),
        "Hopper",
        81559,
        700.0,
        8,
        _eight_slice(
            ("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
            (9.75, 19.625, 39.5, 79.25),
        ),
    ),
    # H100 NVL 94GB: MIG User Guide "H100 MIG Profiles" (94GB names); names as in
    # NVIDIA mig-parted config-default.yaml (1g.12gb ... 7g.94gb).
    GpuModel(
        "H100-94GB",
        ("NVIDIA H100 NVL",),
        ("H100-NVL", "H100-NVL-94GB", "H100-94GB", "H100 NVL 94GB"),
        "Hopper",
        95830,
        400.0,
        8,
        _eight_slice(
            ("1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb"),
            (11.5, 23.25, 46.75, 93.25),
        ),
    ),
    # H200 141GB (SXM and NVL): MIG User Guide, "H200 MIG Profiles" table.
    GpuModel(
        "H200-141GB",
        ("NVIDIA H200", "NVIDIA H200 NVL"),
        ("H200-SXM5-141GB", "H200-NVL", "H200-141GB", "H200"),
        "Hopper",
        143771,
        700.0,
        8,
        _eight_slice(
            ("1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"),
            (16.0, 32.5, 69.75, 139.75),
        ),
    ),
    # GH200 96GB: MIG User Guide "GH200 MIG Profiles"; names per mig-parted
    # config-default.yaml (1g.12gb, 1g.24gb, 2g.24gb, 3g.48gb, 4g.48gb, 7g.96gb).
    GpuModel(
        "GH200-96GB",
        ("NVIDIA GH200 480GB", "NVIDIA GH200 96GB HBM3"),
        ("GH200-96GB", "GH200", "GH200 480GB"),
        "Hopper",
        97871,
        900.0,
        8,
        _eight_slice(
            ("1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.48gb", "4g.48gb", "7g.96gb"),
            (11.75, 23.75, 47.5, 95.0),
        ),
    ),
    # GH200 144GB HBM3e: mig-parted config-default.yaml (1g.18gb, 1g.36gb, 2g.36gb,
    # 3g.72gb, 4g.72gb, 7g.144gb), geometry per MIG User Guide "GH200 MIG Profiles".
    GpuModel(
        "GH200-144GB",
        ("NVIDIA GH200 144G HBM3e",),
        ("GH200-144GB", "GH200 144G HBM3e"),
        "Hopper",
        146831,
        900.0,
        8,
        _eight_slice(
            ("1g.18gb", "1g.18gb+me", "1g.36gb", "2g.36gb", "3g.72gb", "4g.72gb", "7g.144gb"),
            (16.75, 34.25, 71.0, 142.0),
        ),
    ),
    # B200 180GB: MIG User Guide "B200 MIG Profiles" table (1g.23gb ... 7g.180gb).
    # The Blackwell-only +gfx / -me / +me.all variants are not listed.
    GpuModel(
        "B200",
        ("NVIDIA B200",),
        ("B200-180GB", "B200", "HGX B200"),
        "Blackwell",
        183359,
        1000.0,
        8,
        _eight_slice(
            ("1g.23gb", "1g.23gb+me", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"),
            (22.5, 45.0, 90.0, 178.5),
        ),
    ),
    # A30-24GB: 4 memory slices, 4 compute slices. MIG User Guide "A30 MIG Profiles";
    # IDs and GiB from -lgip on A30 (14, 21, 5, 6, 0; 5.81 / 11.69 / 23.50).
    GpuModel(
        "A30-24GB",
        ("NVIDIA A30",),
        ("A30-24GB", "A30"),
        "Ampere",
        24576,
        165.0,
        4,
        (
            MigProfile("1g.6gb", 14, 1, 1, 5.8125, 4, (0, 1, 2, 3)),
            MigProfile("1g.6gb+me", 21, 1, 1, 5.8125, 1, (0, 1, 2, 3)),
            MigProfile("2g.12gb", 5, 2, 2, 11.6875, 2, (0, 2)),
            MigProfile("2g.12gb+me", 6, 2, 2, 11.6875, 1, (0, 2)),
            MigProfile("4g.24gb", 0, 4, 4, 23.5, 1, (0,)),
        ),
    ),
)

# Whole-GPU models from the seed fleet list (memory as nvidia-smi reports MiB).
_WHOLE_MODELS: tuple[GpuModel, ...] = (
    GpuModel("GTX-1080", ("NVIDIA GeForce GTX 1080",), ("GTX-1080",), "Pascal", 8192, 180.0),
    GpuModel(
        "GTX-1080-TI", ("NVIDIA GeForce GTX 1080 Ti",), ("GTX-1080-Ti",), "Pascal", 11264, 250.0
    ),
    GpuModel("TITAN-XP", ("NVIDIA TITAN Xp",), ("Titan-Xp",), "Pascal", 12288, 250.0),
    GpuModel("RTX-2080", ("NVIDIA GeForce RTX 2080",), ("RTX-2080",), "Turing", 8192, 215.0),
    GpuModel(
        "RTX-2080-TI", ("NVIDIA GeForce RTX 2080 Ti",), ("RTX-2080-Ti",), "Turing", 11264, 250.0
    ),
    GpuModel("RTX-3080", ("NVIDIA GeForce RTX 3080",), ("RTX-3080",), "Ampere", 10240, 320.0),
    GpuModel("RTX-3090", ("NVIDIA GeForce RTX 3090",), ("RTX-3090",), "Ampere", 24576, 350.0),
    GpuModel("RTX-4080", ("NVIDIA GeForce RTX 4080",), ("RTX-4080",), "Ada Lovelace", 16376, 320.0),
    GpuModel("RTX-4090", ("NVIDIA GeForce RTX 4090",), ("RTX-4090",), "Ada Lovelace", 24564, 450.0),
    GpuModel(
        "V100-16GB",
        ("Tesla V100-SXM2-16GB", "Tesla V100-PCIE-16GB"),
        ("V100-16GB", "V100-SXM2-16GB", "V100-PCIE-16GB", "V100"),
        "Volta",
        16384,
        300.0,
    ),
    GpuModel(
        "V100-32GB",
        ("Tesla V100-SXM2-32GB", "Tesla V100-PCIE-32GB"),
        ("V100-32GB", "V100-SXM2-32GB", "V100-PCIE-32GB"),
        "Volta",
        32768,
        300.0,
    ),
    GpuModel("L4", ("NVIDIA L4",), ("L4",), "Ada Lovelace", 23034, 72.0),
    GpuModel("L40S", ("NVIDIA L40S",), ("L40S",), "Ada Lovelace", 46068, 350.0),
)

MODELS: tuple[GpuModel, ...] = _MIG_MODELS + _WHOLE_MODELS
MODELS_BY_KEY: dict[str, GpuModel] = {m.key: m for m in MODELS}

_VENDOR_WORDS = ("nvidia", "geforce", "tesla")


def _normalise(name: str) -> str:
    """Lower-case, drop vendor words, spaces, dashes and underscores."""
    n = name.lower()
    for word in _VENDOR_WORDS:
        n = n.replace(word, "")
    return re.sub(r"[\s\-_]+", "", n)


def _build_index() -> dict[str, GpuModel]:
    index: dict[str, GpuModel] = {}
    for model in MODELS:
        for name in (model.key, *model.names, *model.aliases):
            key = _normalise(name)
            if key in index and index[key] is not model:
                raise AssertionError(f"ambiguous GPU name {name!r}")  # a table bug
            index[key] = model
    return index


_INDEX = _build_index()


def resolve_model(name: str) -> GpuModel:
    """Find a model by nvidia-smi name, catalogue key or short form.

    Case, spaces, dashes and the words NVIDIA/GeForce/Tesla are ignored so that
    ``NVIDIA GeForce RTX 4090``, ``RTX-4090`` and ``rtx4090`` are one model.
    """
    model = _INDEX.get(_normalise(name))
    if model is None:
        known = ", ".join(m.key for m in MODELS)
        raise UnknownGpuModel(f"unknown GPU model {name!r}; known models: {known}")
    return model


@lru_cache(maxsize=1024)
def find_model(name: str) -> GpuModel | None:
    """Like ``resolve_model`` but ``None`` for an unknown name (cached: the planner
    resolves every device on every decision)."""
    return _INDEX.get(_normalise(name))


def profile(model: GpuModel | str, name: str) -> MigProfile:
    """Look up profile ``name`` on ``model``; ``InvalidLayout`` when the model lacks it."""
    m = resolve_model(model) if isinstance(model, str) else model
    p = m.profile(name)
    if p is None:
        offered = ", ".join(x.name for x in m.profiles) or "none (no MIG)"
        raise InvalidLayout(f"profile {name!r} does not exist on {m.key}; profiles: {offered}")
    return p


@lru_cache(maxsize=1)
def all_profile_names() -> frozenset[str]:
    """Every profile name any catalogued model offers."""
    return frozenset(p.name for m in MODELS for p in m.profiles)


def slot_mask(start: int, size: int) -> int:
    """Bit mask of the memory slices ``[start, start+size)``."""
    return ((1 << size) - 1) << start


def validate_layout(model: GpuModel | str, instances: Iterable[tuple[str, int]]) -> None:
    """Raise ``InvalidLayout`` unless the (profile, start) pairs can coexist on one GPU.

    Checks, in the order a reader would: the profile exists on the model, its start
    is an allowed placement, it overlaps nothing placed before it, no profile is
    used more often than -lgip allows, and at most one ``+me`` instance holds the
    media engines.
    """
    m = resolve_model(model) if isinstance(model, str) else model
    if not m.mig_capable:
        if any(True for _ in instances):
            raise InvalidLayout(f"{m.key} does not support MIG; it takes no instances")
        return
    used = 0
    owner: dict[int, str] = {}
    counts: Counter[str] = Counter()
    media: list[str] = []
    for name, start in instances:
        p = profile(m, name)
        if start not in p.starts:
            allowed = ", ".join(str(s) for s in p.starts)
            raise InvalidLayout(
                f"{p.name} cannot start at memory slice {start} on {m.key}; allowed starts: "
                f"{allowed}"
            )
        mask = slot_mask(start, p.size)
        if used & mask:
            clash = next(i for i in range(m.memory_slices) if (used & mask) >> i & 1)
            raise InvalidLayout(
                f"{p.name}@{start} overlaps {owner[clash]} at memory slice {clash} on {m.key}"
            )
        used |= mask
        for i in range(start, start + p.size):
            owner[i] = f"{p.name}@{start}"
        counts[p.name] += 1
        if counts[p.name] > p.max_count:
            raise InvalidLayout(f"at most {p.max_count}x {p.name} fit on {m.key}")
        if p.media:
            media.append(p.name)
            if len(media) > 1:
                raise InvalidLayout(
                    f"only one media-extension (+me) instance fits on {m.key}: {', '.join(media)}"
                )


def is_valid_layout(model: GpuModel | str, instances: Iterable[tuple[str, int]]) -> bool:
    """``validate_layout`` as a predicate."""
    try:
        validate_layout(model, instances)
    except InvalidLayout:
        return False
    return True
