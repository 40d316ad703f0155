"""Seed 003's model and profile names mapped to the catalogue's, and back."""

from __future__ import annotations

import pytest

from sandman.errors import InvalidRequest
from sandman.gpu.catalogue import MODELS, resolve_model
from sandman.gpu.seed_names import catalogue_profile, seed_model_name, seed_profile_name


def test_model_names_read_as_the_seed_writes_them() -> None:
    assert seed_model_name("H100-80GB") == "H100_80GB"
    assert seed_model_name("A100-80GB") == "A100_80GB"
    assert seed_model_name("RTX-4090") == "RTX4090"
    assert seed_model_name("GTX-1080-TI") == "GTX1080TI"
    assert seed_model_name("B200") == "B200"


def test_seed_profile_names_map_to_the_catalogue_on_their_model() -> None:
    h100 = resolve_model("H100-80GB")
    assert catalogue_profile(h100, "H100_2G20GB") == "2g.20gb"
    assert catalogue_profile(h100, "h100_3g40gb") == "3g.40gb"
    assert catalogue_profile(h100, "H100_1G10GB+ME") == "1g.10gb+me"
    assert catalogue_profile(h100, "2g.20gb") == "2g.20gb"  # the catalogue's own name
    assert catalogue_profile(resolve_model("A100-40GB"), "A100_1G5GB") == "1g.5gb"
    assert seed_profile_name(h100, "7g.80gb") == "H100_7G80GB"


def test_every_profile_round_trips() -> None:
    for model in MODELS:
        for profile in model.profiles:
            assert catalogue_profile(model, seed_profile_name(model, profile.name)) == profile.name


def test_unknown_names_list_the_valid_ones_for_the_model() -> None:
    h100 = resolve_model("H100-80GB")
    with pytest.raises(InvalidRequest) as refused:
        catalogue_profile(h100, "A100_1G5GB")  # another family's, and not an H100 size
    assert "H100_2G20GB" in refused.value.message and "H100_7G80GB" in refused.value.message
    with pytest.raises(InvalidRequest, match="valid: H100_1G10GB"):
        catalogue_profile(h100, "H100_2G10GB")
    with pytest.raises(InvalidRequest, match="does not support MIG"):
        catalogue_profile(resolve_model("RTX-4090"), "RTX4090_1G6GB")
