"""Rates: the settings' defaults, a rates file on top, and the price of each kind of grant."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandman.accounting.rates import (
    Grant,
    Rates,
    build_rates,
    hourly_price,
    load_rates,
    model_key,
    parse_rate_list,
)
from sandman.errors import ConfigurationError


def test_seed_defaults_and_names_as_nvidia_smi_prints_them() -> None:
    rates = build_rates()
    assert rates.gpu_rate("H100-80GB") == 8.0
    assert rates.gpu_rate("A100-80GB") == 6.0
    assert rates.gpu_rate("RTX-4090") == 2.0
    assert rates.gpu_rate("L4") == 0.0  # not listed: the default rate
    assert model_key("NVIDIA A100-SXM4-80GB") == "A100-80GB"
    assert parse_rate_list("H100_80GB=3, rtx4090=1") == {"H100-80GB": 3.0, "RTX-4090": 1.0}


def test_a_mig_instance_costs_its_slices_a_share_its_fraction() -> None:
    rates = build_rates()
    a100 = "NVIDIA A100-SXM4-80GB"
    assert hourly_price(rates, Grant(a100, None, None, 1)) == 6.0
    assert hourly_price(rates, Grant(a100, None, None, 2)) == 12.0
    assert hourly_price(rates, Grant(a100, "3g.40gb", None, 1)) == pytest.approx(6.0 * 3 / 7)
    assert hourly_price(rates, Grant(a100, "1g.10gb", None, 1)) == pytest.approx(6.0 / 7)
    assert hourly_price(rates, Grant("NVIDIA GeForce RTX 4090", None, 0.25, 1)) == 0.5
    # A30: 4 compute slices, so 1g counts 1.75 sevenths.
    a30 = Rates(per_gpu={"A30-24GB": 7.0})
    assert hourly_price(a30, Grant("A30-24GB", "1g.6gb", None, 1)) == pytest.approx(1.75)


def test_a_profile_rate_wins_over_the_slices(tmp_path: Path) -> None:
    path = tmp_path / "rates.yaml"
    path.write_text(
        "currency: EUR\n"
        "low_priority_discount: 0.25\n"
        "rates:\n  A100-80GB: 7\n  L4: 1.5\n"
        "profile_rates:\n  A100-80GB:\n    1g.10gb: 1.5\n"
    )
    rates = load_rates(path)
    assert rates.currency == "EUR" and rates.discount("low") == 0.25 and rates.discount("high") == 0
    assert rates.gpu_rate("H100-80GB") == 8.0  # from the settings, the file has none
    assert rates.gpu_rate("L4") == 1.5
    a100 = "NVIDIA A100-SXM4-80GB"
    assert hourly_price(rates, Grant(a100, "1g.10gb", None, 2)) == 3.0
    assert hourly_price(rates, Grant(a100, "2g.20gb", None, 1)) == pytest.approx(2.0)


@pytest.mark.parametrize(
    "text",
    [
        "rates: [1, 2]\n",
        "rates:\n  A100-80GB: -1\n",
        "rates:\n  A100-80GB: yes\n",
        "low_priority_discount: 2\n",
        "currency: ''\n",
        "price: 3\n",
        "rates: {A100-80GB: 1\n",
    ],
)
def test_a_wrong_rates_file_is_refused_saying_why(tmp_path: Path, text: str) -> None:
    path = tmp_path / "rates.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError):
        load_rates(path)


def test_a_missing_file_and_a_wrong_setting_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_rates(tmp_path / "nope.yaml")
    with pytest.raises(ConfigurationError, match="MODEL=RATE"):
        parse_rate_list("A100")
    with pytest.raises(ConfigurationError, match="not a number"):
        parse_rate_list("A100-80GB=cheap")
