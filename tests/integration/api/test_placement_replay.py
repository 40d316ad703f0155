"""A replayed create/delete sequence on two simulated A100-40GB GPUs, through the API with
real containers: the placement policy admits at least as many sessions as first fit on
the same sequence, and says why it placed each one to operators, not to the user."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.bench_planner import Request, simulate
from tests.integration.accounts.test_self_service import token_for
from tests.integration.conftest import Harness

from sandman.gpu.catalogue import resolve_model

# ("+", name, profile) creates a session, ("-", name, "") deletes it (a no-op when that
# session was refused). First fit puts the first 1g at slice 0 of GPU 0, which leaves
# the second 4g no GPU; the sequence is one where the choice of slot matters.
STEPS = [
    ("+", "a", "3g.20gb"),
    ("+", "b", "1g.5gb"),
    ("+", "c", "4g.20gb"),
    ("+", "d", "4g.20gb"),
    ("+", "e", "1g.5gb"),
    ("-", "b", ""),
    ("-", "d", ""),
    ("+", "f", "1g.5gb"),
    ("+", "g", "1g.5gb"),
    ("+", "h", "4g.20gb"),
]


def as_requests(steps: list[tuple[str, str, str]]) -> list[Request]:
    """The steps as the benchmark's (arrival, lifetime, size) requests: step i at time i,
    a deleted session ending just before the step after its delete."""
    ends = {name: i for i, (op, name, _) in enumerate(steps) if op == "-"}
    return [
        (float(i), ends.get(name, 10_000) - i + 0.5, profile.split(".")[0])
        for i, (op, name, profile) in enumerate(steps)
        if op == "+"
    ]


def test_a_replayed_sequence_admits_at_least_as_many_as_first_fit(
    make_harness: Any, tmp_path: Path
) -> None:
    first_fit, _ = simulate(as_requests(STEPS), resolve_model("A100-40GB"), "first-fit", 2)
    creates = sum(op == "+" for op, _, _ in STEPS)
    assert first_fit < creates  # first fit refuses some: the sequence can tell them apart

    topology = tmp_path / "two-a100.yaml"
    topology.write_text(
        "gpus:\n"
        "  - model: A100-SXM4-40GB\n    mig: dynamic\n"
        "  - model: A100-SXM4-40GB\n    mig: dynamic\n"
    )
    harness: Harness = make_harness(gpu_topology=str(topology))
    users = {name: token_for(harness, f"user-{name}") for op, name, _ in STEPS if op == "+"}
    olga = token_for(harness, "olga")
    role = harness.client.patch(
        "/api/v1/users/olga", json={"role": "operator"}, headers=harness.headers
    )
    assert role.status_code == 200, role.text

    made: dict[str, dict[str, Any]] = {}
    refused: list[str] = []
    for op, name, profile in STEPS:
        if op == "-":
            if name in made:
                sid = made[name]["session_id"]
                gone = harness.client.delete(f"/api/v1/sessions/{sid}", headers=users[name])
                assert gone.status_code == 200, gone.text
            continue
        response = harness.client.post(
            "/api/v1/sessions", json={"mig_profile": profile}, headers=users[name]
        )
        if response.status_code == 503:
            assert profile in response.json()["error"]
            refused.append(name)
            continue
        assert response.status_code == 201, response.text
        made[name] = response.json()

    admitted = len(made)
    assert admitted >= first_fit, f"admitted {admitted}, first fit {first_fit}; refused {refused}"
    assert admitted + len(refused) == creates

    # Every grant's reason, as operators and admins see it; the user sees none.
    for name, session in made.items():
        path = f"/api/v1/sessions/{session['session_id']}"
        mine = harness.client.get(path, headers=users[name]).json()
        assert mine["placement_reason"] is None
        admin = harness.client.get(path, headers=harness.headers).json()
        operator = harness.client.get(path, headers=olga).json()
        reason = admin["placement_reason"]
        assert reason == operator["placement_reason"]
        assert reason and reason.startswith(f"{session['mig_profile']} at slice "), (name, reason)
    # the first 1g (b) went where it kept the 4g possible on its GPU
    assert (
        "kept"
        in harness.client.get(
            f"/api/v1/sessions/{made['b']['session_id']}", headers=harness.headers
        ).json()["placement_reason"]
    )
