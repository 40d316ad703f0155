"""A spent block-new budget refuses new sessions on a real server with real
containers, and its forecast counts the running session."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from tests.integration.support import HEADERS, Server


def test_a_spent_block_new_budget_refuses_with_budget_exhausted(
    server: Callable[..., Server],
) -> None:
    sandman = server(gpu_topology="a100-40gb-x1", gpu_rates="A100-40GB=7", currency="EUR")
    sandman.start()
    api = f"{sandman.url}/api/v1"
    assert httpx.post(f"{api}/teams", json={"name": "ml"}, headers=HEADERS).status_code == 201
    budget = httpx.put(
        f"{api}/budgets/team/ml",
        json={"amount": 0.001, "action": "block-new"},
        headers=HEADERS,
    )
    assert budget.status_code == 200, budget.text
    first = sandman.create("ba", mig_profile="3g.20gb", team="ml")
    assert first.status_code == 201, first.text
    time.sleep(2)  # a 3g costs 3 EUR an hour: 0.001 EUR takes 1.2 s
    status = sandman.get("/budgets")[0]
    assert status["spent"] >= 0.001 and status["forecast"]["hourly_now"] == 3.0
    refused = sandman.create("bb", mig_profile="1g.5gb", team="ml")
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "budget_exhausted"
    assert "team ml's budget" in refused.json()["error"]
    other = sandman.create("bc", mig_profile="1g.5gb")  # no team: no budget
    assert other.status_code == 201, other.text
