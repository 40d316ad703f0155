from __future__ import annotations

import pytest

from sandman.errors import InvalidRequest
from sandman.services.passwords import hash_password, verify_password


def test_hash_round_trip_and_salting() -> None:
    first, second = hash_password("correct horse battery"), hash_password("correct horse battery")
    assert first != second and first.startswith("scrypt$")
    assert "correct" not in first
    assert verify_password("correct horse battery", first)
    assert not verify_password("correct horse batterY", first)


@pytest.mark.parametrize("stored", [None, "", "plain", "md5$x$y$z$a$b", "scrypt$1$2$3$!!$!!"])
def test_malformed_hashes_never_match(stored: str | None) -> None:
    assert not verify_password("whatever password", stored)


def test_short_passwords_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="12"):
        hash_password("short")
