from __future__ import annotations

import pytest

from sandman.domain import ACTIVE_STATUSES, SessionStatus, validate_user_id
from sandman.errors import InvalidRequest


@pytest.mark.parametrize("name", ["user123", "_svc", "a", "a-b_c", "x" * 32])
def test_valid_user_ids(name: str) -> None:
    assert validate_user_id(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "User", "1abc", "-a", "a b", "a/b", "../etc", "a.b", "x" * 33, "é", "root", "sshd", "tty",
     "nobody", "a\n", None, 5],
)  # fmt: skip
def test_invalid_user_ids(name: object) -> None:
    with pytest.raises(InvalidRequest):
        validate_user_id(name)  # type: ignore[arg-type]


def test_active_statuses() -> None:
    assert {s for s in SessionStatus if s.active} == ACTIVE_STATUSES
    assert not SessionStatus.EXPIRED.active and SessionStatus.STOPPING.active
