"""GPU grants through the API: dynamic MIG, fallback, and drift repaired by the reconciler."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import Harness


def _gpus(harness: Harness) -> list[dict]:  # type: ignore[type-arg]
    gpus: list[dict] = harness.client.get("/api/v1/gpus", headers=harness.headers).json()["gpus"]  # type: ignore[type-arg]
    return gpus


def test_dynamic_mig_packs_and_gives_back(make_harness) -> None:  # type: ignore[no-untyped-def]
    harness: Harness = make_harness(gpu_topology="a100-40gb-x1")
    sessions = []
    for user, profile in [("u1", "1g.5gb"), ("u2", "4g.20gb"), ("u3", "2g.10gb")]:
        response = harness.create(user, mig_profile=profile)
        assert response.status_code == 201, response.text
        sessions.append(response.json())
    layout = {i["profile"]: i for i in _gpus(harness)[0]["mig_instances"]}
    assert set(layout) == {"1g.5gb", "4g.20gb", "2g.10gb"}
    assert layout["4g.20gb"]["start"] == 0  # the 1g did not take slot 0
    assert {i["session_id"] for i in layout.values()} == {s["session_id"] for s in sessions}
    assert all(s["gpu_uuid"] == layout[s["mig_profile"]]["uuid"] for s in sessions)
    full = harness.create("u4", mig_profile="2g.10gb")
    assert full.status_code == 503 and "2g.10gb" in full.json()["error"]

    harness.client.delete("/api/v1/sessions", headers=harness.headers)
    assert _gpus(harness)[0]["mig_instances"] == []  # created on demand, destroyed on release


def test_fallback_to_a_whole_gpu_is_reported(make_harness, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    topology = tmp_path / "t.yaml"
    topology.write_text("gpus:\n  - model: A100-40GB\n    mig: static\n  - model: RTX-4090\n")
    harness: Harness = make_harness(gpu_topology=str(topology))
    response = harness.create("wes", mig_profile="1g.5gb")
    assert response.status_code == 201, response.text
    session = response.json()
    assert session["gpu_fallback"] is True and session["mig_profile"] is None
    assert session["gpu_name"] == "NVIDIA GeForce RTX 4090"
    assert any("whole" in note for note in session["notes"])
    assert harness.create("xan", gpu_count=1).status_code == 503


def test_reconciler_repairs_gpu_drift(make_harness) -> None:  # type: ignore[no-untyped-def]
    harness: Harness = make_harness(gpu_topology="a100-40gb-x1")
    inventory = harness.core.inventory
    gpu_uuid = _gpus(harness)[0]["uuid"]
    session = harness.create("yul", mig_profile="1g.5gb").json()
    # an instance nobody holds (left by a crash) on a dynamic GPU
    orphan = inventory.create_instance(gpu_uuid, "2g.10gb", 2)
    report = harness.core.reconciler.run_once()
    assert report.destroyed_instances == [orphan.uuid]
    # the session's own instance vanishes underneath it
    inventory.destroy_instance(gpu_uuid, session["gpu_uuid"])
    report = harness.core.reconciler.run_once()
    assert report.ended_sessions == [session["session_id"]]
    ended = harness.client.get(
        f"/api/v1/sessions/{session['session_id']}", headers=harness.headers
    ).json()
    assert ended["status"] == "lost" and "vanished" in ended["end_reason"]
    assert harness.containers() == []


def test_reconciler_ends_sessions_whose_container_died_and_removes_strays(
    make_harness,  # type: ignore[no-untyped-def]
) -> None:
    import docker

    harness: Harness = make_harness()
    session = harness.create("zed").json()
    client = docker.from_env(version="auto")
    client.containers.get(session["container_id"]).kill()
    stray = client.containers.run(
        "sandman-workspace:latest", ["sleep", "300"], detach=True, user="20999:20999",
        labels={"sandman.managed": "true", "sandman.session_id": "no-such-session",
                "sandman.deployment": harness.core.deployment_id},
    )  # fmt: skip
    report = harness.core.reconciler.run_once()
    assert report.ended_sessions == [session["session_id"]]
    assert stray.name in report.removed_containers
    assert harness.containers() == []
    assert harness.core.sessions.get(session["session_id"]).status == "lost"
