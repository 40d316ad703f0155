from __future__ import annotations

import pytest

from sandman.errors import InvalidLayout, UnknownGpuModel
from sandman.gpu.catalogue import (
    MODELS,
    is_valid_layout,
    profile,
    resolve_model,
    validate_layout,
)

A100 = "A100-40GB"


def test_a100_40gb_profile_ids_match_lgip() -> None:
    m = resolve_model(A100)
    ids = {p.name: p.profile_id for p in m.profiles}
    assert ids == {
        "1g.5gb": 19,
        "1g.5gb+me": 20,
        "1g.10gb": 15,
        "2g.10gb": 14,
        "3g.20gb": 9,
        "4g.20gb": 5,
        "7g.40gb": 0,
    }


def test_a100_40gb_geometry_traps() -> None:
    m = resolve_model(A100)
    assert profile(m, "3g.20gb").memory_slices == 4
    assert profile(m, "3g.20gb").starts == (0, 4)
    assert profile(m, "4g.20gb").starts == (0,)
    assert profile(m, "1g.5gb").starts == (0, 1, 2, 3, 4, 5, 6)
    assert profile(m, "1g.5gb+me").max_count == 1
    assert profile(m, "1g.10gb").memory_slices == 2
    assert profile(m, "1g.10gb").starts == (0, 2, 4, 6)
    assert profile(m, "7g.40gb").memory_slices == 8
    assert profile(m, "1g.5gb").memory_mib == 4864


def test_a30_has_four_memory_slices() -> None:
    m = resolve_model("A30-24GB")
    assert m.memory_slices == 4
    assert {p.name for p in m.profiles} == {
        "1g.6gb",
        "1g.6gb+me",
        "2g.12gb",
        "2g.12gb+me",
        "4g.24gb",
    }
    assert profile(m, "4g.24gb").memory_slices == 4


@pytest.mark.parametrize("model", [m for m in MODELS if m.mig_capable], ids=lambda m: m.key)
def test_every_model_is_self_consistent(model: object) -> None:
    from sandman.gpu.catalogue import GpuModel

    assert isinstance(model, GpuModel)
    for p in model.profiles:
        assert p.starts, p.name
        for s in p.starts:
            assert s + p.size <= model.memory_slices
        # max count == how many disjoint placements exist (or 1 for +me)
        expected = 1 if p.media else len(p.starts)
        assert p.max_count == expected, p.name
        # the max count is reachable as a layout; one more is refused
        if not p.media:
            validate_layout(model, [(p.name, s) for s in p.starts])
        assert p.memory_mib <= model.memory_mib
    whole = max(model.profiles, key=lambda p: p.memory_slices)
    assert whole.memory_slices == model.memory_slices
    assert whole.starts == (0,)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
        ("A100-SXM4-40GB", "A100-40GB"),
        ("a100-40gb", "A100-40GB"),
        ("NVIDIA A100-PCIE-40GB", "A100-40GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA H100 80GB HBM3", "H100-80GB"),
        ("NVIDIA H100 PCIe", "H100-80GB"),
        ("H100-SXM5-80GB", "H100-80GB"),
        ("H100-80GB", "H100-80GB"),
        ("NVIDIA H100 NVL", "H100-94GB"),
        ("A30-24GB", "A30-24GB"),
        ("NVIDIA A30", "A30-24GB"),
        ("NVIDIA GeForce RTX 4090", "RTX-4090"),
        ("RTX-4090", "RTX-4090"),
        ("rtx 4090", "RTX-4090"),
        ("RTX4090", "RTX-4090"),
        ("Tesla V100-SXM2-32GB", "V100-32GB"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA TITAN Xp", "TITAN-XP"),
        ("NVIDIA GeForce GTX 1080 Ti", "GTX-1080-TI"),
        ("NVIDIA B200", "B200"),
        ("NVIDIA H200", "H200-141GB"),
    ],
)
def test_resolve_model(name: str, key: str) -> None:
    assert resolve_model(name).key == key


def test_unknown_model_lists_known_models() -> None:
    with pytest.raises(UnknownGpuModel) as err:
        resolve_model("Voodoo 3")
    assert "A100-40GB" in err.value.message and "RTX-4090" in err.value.message


def test_non_mig_models_have_memory_and_architecture() -> None:
    m = resolve_model("RTX-4090")
    assert not m.mig_capable
    assert m.architecture == "Ada Lovelace"
    assert m.memory_gb == 24
    assert resolve_model("GTX-1080").architecture == "Pascal"


@pytest.mark.parametrize(
    ("layout", "reason"),
    [
        ([("1g.5gb", 7)], "cannot start at memory slice 7"),
        ([("3g.20gb", 2)], "allowed starts: 0, 4"),
        ([("4g.20gb", 4)], "allowed starts: 0"),
        ([("3g.20gb", 0), ("1g.5gb", 3)], "overlaps 3g.20gb@0 at memory slice 3"),
        ([("1g.5gb+me", 0), ("1g.5gb+me", 1)], r"at most 1x 1g\.5gb\+me"),
        ([("1g.10gb", 0)] * 1 + [("1g.10gb", 2), ("1g.10gb", 4), ("1g.10gb", 6)], ""),
        ([("3g.40gb", 0)], "does not exist on A100-40GB"),
    ],
)
def test_validate_layout_reasons(layout: list[tuple[str, int]], reason: str) -> None:
    if not reason:
        validate_layout(A100, layout)
        return
    with pytest.raises(InvalidLayout, match=reason):
        validate_layout(A100, layout)
    assert not is_valid_layout(A100, layout)


def test_valid_layouts() -> None:
    assert is_valid_layout(A100, [("1g.5gb", i) for i in range(7)])
    assert is_valid_layout(A100, [("4g.20gb", 0), ("3g.20gb", 4)])
    assert is_valid_layout(A100, [("2g.10gb", 0), ("2g.10gb", 2), ("3g.20gb", 4)])
    assert is_valid_layout(A100, [("1g.5gb+me", 6), ("4g.20gb", 0), ("2g.10gb", 4)])
    assert not is_valid_layout(A100, [("1g.5gb", i) for i in range(8)])
    assert not is_valid_layout("A30-24GB", [("1g.6gb+me", 0), ("2g.12gb+me", 2)])
    assert not is_valid_layout("RTX-4090", [("1g.5gb", 0)])
    assert is_valid_layout("RTX-4090", [])
