from __future__ import annotations

from pathlib import Path

import pytest

from sandman.errors import ConfigurationError, InvalidLayout, UnknownGpuModel
from sandman.gpu.catalogue import validate_layout
from sandman.gpu.topology import list_presets, load_topology, parse_topology
from sandman.gpu.types import MigMode


def test_presets_ship_and_load() -> None:
    assert set(list_presets()) >= {
        "a100-40gb-x1",
        "a100-40gb-7x1g",
        "a100-80gb-x2",
        "h100-80gb-x8",
        "mixed",
    }
    seven = load_topology("a100-40gb-7x1g")
    [gpu] = seven.gpus
    assert gpu.mig is MigMode.STATIC
    assert [(i.profile, i.start) for i in gpu.instances] == [("1g.5gb", s) for s in range(7)]
    h100 = load_topology("h100-80gb-x8")
    assert len(h100.gpus) == 8 and all(g.model.key == "H100-80GB" for g in h100.gpus)
    mixed = load_topology("mixed")
    assert [(g.model.key, g.mig) for g in mixed.gpus] == [
        ("A100-80GB", MigMode.DYNAMIC),
        ("RTX-4090", MigMode.DISABLED),
    ]


def test_defaults_and_placement() -> None:
    topo = parse_topology(
        {
            "gpus": [
                {"model": "A100-SXM4-40GB", "mig": "static", "instances": ["1g.5gb", "4g.20gb"]},
                {"model": "A100-40GB", "instances": ["3g.20gb@4", "2g.10gb"]},
                "RTX-4090",
            ]
        }
    )
    first, second, third = topo.gpus
    assert {(i.profile, i.start) for i in first.instances} == {("4g.20gb", 0), ("1g.5gb", 6)}
    assert second.mig is MigMode.DYNAMIC
    validate_layout(second.model, [(i.profile, i.start) for i in second.instances])
    assert ("3g.20gb", 4) in {(i.profile, i.start) for i in second.instances}
    assert third.mig is MigMode.DISABLED


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"gpus": [{"model": "Voodoo"}]}, UnknownGpuModel),
        ({"gpus": [{"model": "A100-40GB", "instances": ["3g.20gb@2"]}]}, InvalidLayout),
        ({"gpus": [{"model": "A100-40GB", "instances": ["3g.40gb"]}]}, InvalidLayout),
        ({"gpus": [{"model": "A100-40GB", "instances": ["4g.20gb"] * 2}]}, InvalidLayout),
        ({"gpus": [{"model": "RTX-4090", "mig": "dynamic"}]}, ConfigurationError),
        ({"gpus": [{"model": "A100-40GB", "mig": "sometimes"}]}, ConfigurationError),
        (
            {"gpus": [{"model": "A100-40GB", "mig": "disabled", "instances": ["1g.5gb"]}]},
            ConfigurationError,
        ),
        ({"gpus": [{"model": "A100-40GB", "colour": "red"}]}, ConfigurationError),
        ({"gpus": []}, ConfigurationError),
        (["not a mapping"], ConfigurationError),
    ],
)
def test_invalid_topologies(data: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_topology(data)


def test_load_from_file_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "gpus:\n  - model: NVIDIA H100 80GB HBM3\n    mig: static\n    instances: [7g.80gb]\n"
    )
    topo = load_topology(str(path))
    assert topo.gpus[0].instances[0].profile == "7g.80gb"
    with pytest.raises(ConfigurationError, match="neither a preset"):
        load_topology(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpus: [unclosed")
    with pytest.raises(ConfigurationError):
        load_topology(str(bad))


def test_a_bad_placement_is_an_invalid_layout() -> None:
    # reaches the API through POST /gpus/{uuid}/mig: a 400, not a server error
    with pytest.raises(InvalidLayout, match=r"bad placement '1g\.5gb@x'"):
        parse_topology({"gpus": [{"model": "A100-40GB", "instances": ["1g.5gb@x"]}]})
