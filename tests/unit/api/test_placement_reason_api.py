"""Why a session was placed where it is: shown to operators, not to its user."""

from __future__ import annotations

from fastapi.testclient import TestClient
from tests.unit.api.conftest import HEADERS as ADMIN
from tests.unit.api.test_accounts_api import make_user


def test_operators_see_the_placement_reason_users_do_not(api: TestClient) -> None:
    alice = make_user(api, "alice")
    made = api.post("/api/v1/sessions", json={"mig_profile": "1g.5gb"}, headers=alice)
    assert made.status_code == 201, made.text
    sid = made.json()["session_id"]
    mine = api.get(f"/api/v1/sessions/{sid}", headers=alice).json()
    assert mine["placement_reason"] is None
    seen = api.get(f"/api/v1/sessions/{sid}", headers=ADMIN).json()
    # the simulated machine's MIG GPUs are pre-partitioned: a free instance is taken
    assert seen["placement_reason"].startswith("a free pre-created 1g.5gb on GPU ")
    operator = make_user(api, "olga", role="operator")
    assert api.get(f"/api/v1/sessions/{sid}", headers=operator).json()["placement_reason"]
