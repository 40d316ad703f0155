"""Writable-layer snapshots through the API over the fake runtime: taken as a session
ends within the limit (skipped, with the reason, over it), used by a restore of the
same user's session only, pruned beyond retention; off unless the admin enables it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.fakes.runtime import FakeRuntime
from tests.unit.api.conftest import HEADERS as ADMIN
from tests.unit.api.conftest import fake_core
from tests.unit.api.test_quotas_api import user_token

from sandman.api.app import create_app
from sandman.core import Sandman
from sandman.environments.snapshots import image_name
from sandman.errors import InvalidRequest
from sandman.services.requests import SessionRequest
from sandman.store.models import SessionSnapshotRow

MIB = 1024**2


def make(tmp_path: Path, runtime: FakeRuntime, **settings: Any) -> Iterator[TestClient]:
    core = fake_core(tmp_path, runtime, gpu_topology="a100-40gb-x1", **settings)
    with TestClient(create_app(core, run_background=False)) as client:
        yield client
    core.stop()


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def api(tmp_path: Path, runtime: FakeRuntime) -> Iterator[TestClient]:
    yield from make(tmp_path, runtime, snapshot_max_size="100m", snapshot_retention="2")


def core_of(api: TestClient) -> Sandman:
    core: Sandman = api.app.state.sandman  # type: ignore[attr-defined]
    return core


def record(api: TestClient, session_id: str) -> SessionSnapshotRow | None:
    return core_of(api).snapshots.record(session_id)


def run_and_end(
    api: TestClient, runtime: FakeRuntime, headers: dict[str, str], layer: int, **body: Any
) -> dict[str, Any]:
    made = api.post("/api/v1/sessions", json=body, headers=headers)
    assert made.status_code == 201, made.text
    session = made.json()
    runtime.layer_sizes[session["container_name"]] = layer
    assert api.delete(f"/api/v1/sessions/{session['id']}", headers=headers).status_code < 300
    out: dict[str, Any] = session
    return out


def launched_image(runtime: FakeRuntime, session_id: str) -> str:
    found = [c.launch.image for c in runtime.containers.values()
             if c.launch.session_id == session_id]  # fmt: skip
    assert found, session_id
    return found[-1]


def test_an_ended_session_is_snapshotted_and_its_restore_starts_from_it(
    api: TestClient, runtime: FakeRuntime
) -> None:
    ann = user_token(api, "ann")
    old = run_and_end(api, runtime, ann, 10 * MIB, mig_profile="1g.5gb")
    image = image_name("sandman", "ann", old["id"])
    assert runtime.images[image] == {
        "sandman.managed": "true",
        "sandman.deployment": core_of(api).deployment_id,
        "sandman.user_id": "ann",
        "sandman.session_id": old["id"],
        "sandman.snapshot": "true",
    }
    kept = record(api, old["id"])
    assert kept is not None and (kept.status, kept.layer_bytes, kept.depth) == ("kept", 10 * MIB, 1)
    assert kept.base_image == old["image"]

    made = api.post("/api/v1/sessions", json={"restore": old["id"]}, headers=ann)
    assert made.status_code == 201, made.text
    new = made.json()
    assert new["image"] == image
    assert launched_image(runtime, new["id"]) == image
    assert any("started from the snapshot" in n and image in n for n in new["notes"])


def test_a_layer_over_the_limit_is_skipped_and_the_restore_says_why(
    api: TestClient, runtime: FakeRuntime
) -> None:
    ann = user_token(api, "ann")
    old = run_and_end(api, runtime, ann, 200 * MIB)
    assert runtime.images == {}
    skipped = record(api, old["id"])
    assert skipped is not None and skipped.status == "skipped"
    assert skipped.reason is not None and "SANDMAN_SNAPSHOT_MAX_SIZE (100M)" in skipped.reason
    new = api.post("/api/v1/sessions", json={"restore": "latest"}, headers=ann).json()
    assert new["image"] == old["image"]
    assert any("was not used" in n and "SANDMAN_SNAPSHOT_MAX_SIZE" in n for n in new["notes"])


def test_a_chain_counts_the_snapshot_it_started_from(api: TestClient, runtime: FakeRuntime) -> None:
    ann = user_token(api, "ann")
    first = run_and_end(api, runtime, ann, 60 * MIB)
    second = run_and_end(api, runtime, ann, 30 * MIB, restore=first["id"])
    chained = record(api, second["id"])
    assert chained is not None and chained.status == "kept"
    assert (chained.size_bytes, chained.depth, chained.base_image) == (90 * MIB, 2, first["image"])
    third = run_and_end(api, runtime, ann, 20 * MIB, restore=second["id"])
    over = record(api, third["id"])
    assert over is not None and over.status == "skipped"  # 110 MiB with its chain


def test_retention_prunes_only_beyond_its_count(api: TestClient, runtime: FakeRuntime) -> None:
    ann = user_token(api, "ann")
    ids = [run_and_end(api, runtime, ann, MIB)["id"] for _ in range(3)]
    assert sorted(runtime.images) == sorted(image_name("sandman", "ann", i) for i in ids[1:])
    pruned = record(api, ids[0])
    assert pruned is not None and pruned.status == "pruned" and pruned.pruned_at is not None
    note = api.post("/api/v1/sessions", json={"restore": ids[0]}, headers=ann).json()["notes"]
    assert any("was not used" in n and "SANDMAN_SNAPSHOT_RETENTION" in n for n in note)


def test_retention_leaves_an_image_that_is_not_sandmans(
    api: TestClient, runtime: FakeRuntime
) -> None:
    ann = user_token(api, "ann")
    first = run_and_end(api, runtime, ann, MIB)["id"]
    mine = image_name("sandman", "ann", first)
    runtime.images[mine] = {"sandman.snapshot": "true"}  # relabelled by someone else
    for _ in range(2):
        run_and_end(api, runtime, ann, MIB)
    assert mine in runtime.images  # never removed, only forgotten
    forgotten = record(api, first)
    assert forgotten is not None and forgotten.status == "pruned"


def test_only_the_users_own_snapshot_is_allowed(api: TestClient, runtime: FakeRuntime) -> None:
    ann = user_token(api, "ann")
    user_token(api, "ben")
    old = run_and_end(api, runtime, ann, MIB)
    image = image_name("sandman", "ann", old["id"])
    core = core_of(api)
    assert core.snapshots.allow("ann", image, old["image"])
    assert not core.snapshots.allow("ben", image, old["image"])
    assert not core.snapshots.allow("ann", image, "some-other:image")
    assert not core.snapshots.allow("ann", "sandman-workspace:latest", old["image"])
    with pytest.raises(InvalidRequest, match="not a snapshot of ben's"):
        core.sessions.create(SessionRequest(user_id="ben", snapshot_image=image))
    # The image is not in SANDMAN_ALLOWED_IMAGES either: naming it is refused.
    named = api.post("/api/v1/sessions", json={"image": image}, headers=ann)
    assert named.status_code in (400, 422), named.text


def test_a_restore_naming_its_own_image_does_not_use_the_snapshot(
    api: TestClient, runtime: FakeRuntime
) -> None:
    ann = user_token(api, "ann")
    old = run_and_end(api, runtime, ann, MIB)
    new = api.post(
        "/api/v1/sessions", json={"restore": old["id"], "environment": "base"}, headers=ann
    ).json()
    assert new["image"] == old["image"]
    assert any("names its own image or environment" in n for n in new["notes"])


def test_a_runtime_without_snapshots_records_why(api: TestClient, runtime: FakeRuntime) -> None:
    runtime.snapshots_supported = False
    ann = user_token(api, "ann")
    old = run_and_end(api, runtime, ann, MIB)
    skipped = record(api, old["id"])
    assert skipped is not None and skipped.status == "skipped"
    assert skipped.reason is not None and "size" in skipped.reason


def test_snapshots_are_off_unless_enabled(tmp_path: Path, runtime: FakeRuntime) -> None:
    for api in make(tmp_path, runtime):
        ann = user_token(api, "ann")
        old = run_and_end(api, runtime, ann, MIB)
        assert runtime.images == {} and record(api, old["id"]) is None
        assert runtime.calls["layer_size"] == 0 and runtime.calls["commit_snapshot"] == 0
        new = api.post("/api/v1/sessions", json={"restore": "latest"}, headers=ann).json()
        assert not any("snapshot" in n for n in new["notes"])


def test_a_runtime_lacking_the_snapshot_methods_is_recorded_as_keeping_none(
    api: TestClient, runtime: FakeRuntime
) -> None:
    core_of(api).snapshots.runtime = None  # as for a runtime without ``Snapshotting``
    ann = user_token(api, "ann")
    old = run_and_end(api, runtime, ann, MIB)
    skipped = record(api, old["id"])
    assert skipped is not None and skipped.status == "skipped"
    assert skipped.reason is not None and "keeps no snapshots" in skipped.reason
    assert runtime.images == {}
    new = api.post("/api/v1/sessions", json={"restore": "latest"}, headers=ann).json()
    assert any("keeps no snapshots" in n for n in new["notes"]), new["notes"]


def test_the_docker_and_fake_runtimes_offer_snapshots() -> None:
    from sandman.runtime.base import Snapshotting
    from sandman.runtime.docker.backend import DockerRuntime

    assert isinstance(FakeRuntime(), Snapshotting)
    methods = ("layer_size", "commit_snapshot", "snapshot_labels", "remove_snapshot")
    assert all(callable(getattr(Snapshotting, name)) for name in methods)
    assert all(callable(getattr(DockerRuntime, name, None)) for name in methods)


def test_the_portals_restore_button_starts_from_the_snapshot(tmp_path: Path) -> None:
    import html

    from tests.unit.web.test_portal import KEY, World, csrf_of, session_id, start

    runtime = FakeRuntime()
    core = fake_core(
        tmp_path, runtime, gpu_topology="h100-80gb-x8", default_mig_profile="1g.10gb",
        snapshot_max_size="1g", create_workers=2, create_wait=0.3,
    )  # fmt: skip
    app = create_app(core, run_background=False)
    with TestClient(app):
        world = World(core, app)
        alice = world.person("alice")
        alice.post("/ui/keys", data={"csrf_token": csrf_of(alice), "add": KEY})
        sid = session_id(start(alice))
        deadline = time.monotonic() + 10
        while core.sessions.get(sid).status != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        alice.post(f"/ui/sessions/{sid}/end", data={"csrf_token": csrf_of(alice)})
        image = image_name(core.settings.container_prefix, "alice", sid)
        assert image in runtime.images
        restored = alice.post(
            "/ui/sessions/restore", data={"csrf_token": csrf_of(alice), "restore": sid}
        )
        assert restored.status_code == 303, restored.text
        new = session_id(restored)
        assert core.sessions.get(new).image == image
        page = html.unescape(alice.get(f"/ui/sessions/{new}").text)
        assert "started from the snapshot" in page
    core.stop()


def test_a_queued_restore_is_promoted_under_its_base_images_quota(
    api: TestClient, runtime: FakeRuntime
) -> None:
    ann = user_token(api, "ann")
    old = run_and_end(api, runtime, ann, MIB)
    image = image_name("sandman", "ann", old["id"])
    quota = {"allowed_images": [old["image"]]}
    assert api.put("/api/v1/quotas/user/ann", json=quota, headers=ADMIN).status_code == 200
    ben = user_token(api, "ben")
    blocker = api.post("/api/v1/sessions", json={"mig_profile": "7g.40gb"}, headers=ben).json()
    queued = api.post("/api/v1/sessions", json={"restore": old["id"], "queue": True}, headers=ann)
    assert queued.status_code == 202, queued.text
    new = queued.json()
    assert new["status"] == "queued" and new["image"] == image
    api.delete(f"/api/v1/sessions/{blocker['id']}", headers=ben)
    core_of(api).queue.dispatch()
    deadline = time.monotonic() + 10
    while (row := core_of(api).sessions.get(new["id"])).status != "running":
        assert row.status in ("queued", "starting"), (row.status, row.end_reason)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert launched_image(runtime, new["id"]) == image
