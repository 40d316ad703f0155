"""Writable-layer snapshots with a real container: a file the user leaves outside
/workspace is back in the restored session; /workspace and the secret files (bind
mounts) are not in the image; a layer over the limit is skipped with the reason;
retention removes the older snapshot. Every image made here is removed at the end."""

from __future__ import annotations

import contextlib
import hashlib
import time
from typing import Any

import docker
import docker.errors
from tests.integration.conftest import Harness, remove_deployment_containers

from sandman.environments.snapshots import image_name

PROOF = "/var/tmp/snapshot-proof.txt"


def remove_snapshot_images(deployment_id: str) -> None:
    client = docker.from_env(version="auto")
    labels = [f"sandman.deployment={deployment_id}", "sandman.snapshot=true"]
    for image in client.images.list(filters={"label": labels}):
        for tag in image.tags or [image.id]:
            with contextlib.suppress(docker.errors.NotFound):
                client.images.remove(tag, force=True)


def test_a_snapshot_brings_back_changes_outside_the_workspace(make_harness: Any) -> None:
    harness: Harness = make_harness(snapshot_max_size="8m", snapshot_retention="1")
    core = harness.core
    client = docker.from_env(version="auto")
    try:
        _exercise(harness, client)
    finally:
        core.sessions.end_all("test teardown")
        remove_deployment_containers(core.deployment_id, False)
        remove_snapshot_images(core.deployment_id)
    leftover = client.images.list(
        filters={"label": [f"sandman.deployment={core.deployment_id}", "sandman.snapshot=true"]}
    )
    assert leftover == []


def _exercise(harness: Harness, client: Any) -> None:
    core = harness.core
    prefix = core.settings.container_prefix
    made = harness.create("sam", ttl_minutes=5)
    assert made.status_code == 201, made.text
    first = made.json()
    uid = core.accounts.directory.get("sam").uid
    user = f"{uid}:{uid}"

    def run(container: str, script: str) -> str:
        result = core.runtime.exec(container, ["sh", "-c", script], user, 20)
        assert result.exit_code == 0, result.output
        return result.output

    assert run(first["container_id"], "id -u").strip() != "0"  # the user, not root
    run(first["container_id"], f"echo kept-outside > {PROOF}; echo in-ws > /workspace/ws.txt")
    binds = [
        m["Destination"]
        for m in client.api.inspect_container(first["container_id"])["Mounts"]
        if m["Type"] == "bind"
    ]
    assert "/workspace" in binds
    started = time.monotonic()
    assert (
        harness.client.delete(
            f"/api/v1/sessions/{first['id']}", headers=harness.headers
        ).status_code
        < 300
    )
    print(f"ending with a snapshot took {time.monotonic() - started:.2f} s")
    snap_a = image_name(prefix, "sam", first["id"])
    record = core.snapshots.record(first["id"])
    assert record is not None and record.status == "kept", record and record.reason
    print(f"first layer: {record.layer_bytes} bytes")
    labels = client.images.get(snap_a).labels
    assert labels["sandman.user_id"] == "sam" and labels["sandman.session_id"] == first["id"]
    assert labels["sandman.managed"] == "true" and labels["sandman.snapshot"] == "true"

    # The bind mounts are not in the image: each of their paths (/workspace, the
    # secret files, /etc/passwd...) holds there what the session's base image holds,
    # or an empty mount point, never the mounted content.
    listing = "; ".join(
        f'if [ -d "{p}" ]; then echo "dir:$(ls -A "{p}" | tr "\\n" " ")"; '
        f'elif [ -e "{p}" ]; then echo "file:$(md5sum < "{p}" | cut -c1-32)"; '
        "else echo absent; fi"
        for p in binds
    )

    def look(image: str, script: str) -> list[str]:
        out = client.containers.run(
            image, ["-c", script], entrypoint=["sh"], user=user, remove=True
        )
        return str(out.decode()).splitlines()

    empty = {"dir:", f"file:{hashlib.md5(b'').hexdigest()}"}
    in_snapshot, in_base = look(snap_a, listing), look(first["image"], listing)
    assert len(in_snapshot) == len(binds) == len(in_base)
    for path, snap_seen, base_seen in zip(binds, in_snapshot, in_base, strict=True):
        assert snap_seen == base_seen or snap_seen in empty, (path, snap_seen, base_seen)
    assert in_snapshot[binds.index("/workspace")] == "dir:"
    print(f"bind mounts checked: {', '.join(binds)}")
    assert look(snap_a, f"cat {PROOF}") == ["kept-outside"]
    # The old session's own variables are blanked in the image, not carried over.
    assert look(snap_a, 'echo "[$SANDMAN_SESSION_ID][$SANDMAN_USER]"') == ["[][]"]

    # Restore: the new session starts from the snapshot and sees the file.
    again = harness.create("sam", restore="latest")
    assert again.status_code == 201, again.text
    second = again.json()
    assert second["image"] == snap_a
    assert any("started from the snapshot" in n for n in second["notes"]), second["notes"]
    assert run(second["container_id"], f"cat {PROOF}").strip() == "kept-outside"
    assert run(second["container_id"], "cat /workspace/ws.txt").strip() == "in-ws"
    assert run(second["container_id"], "echo $SANDMAN_SESSION_ID").strip() == second["id"]
    run(second["container_id"], "echo second > /var/tmp/second.txt")
    harness.client.delete(f"/api/v1/sessions/{second['id']}", headers=harness.headers)
    snap_b = image_name(prefix, "sam", second["id"])
    chained = core.snapshots.record(second["id"])
    assert chained is not None and chained.status == "kept", chained and chained.reason
    assert chained.depth == 2
    # Retention (1): the first snapshot went once the second session had ended.
    pruned = core.snapshots.record(first["id"])
    assert pruned is not None and pruned.status == "pruned"
    try:
        client.images.get(snap_a)
        raise AssertionError(f"{snap_a} should have been removed by retention")
    except docker.errors.ImageNotFound:
        pass
    note = harness.create("sam", restore=first["id"])
    assert note.status_code == 201, note.text
    third = note.json()
    assert third["image"] != snap_a
    assert any("SANDMAN_SNAPSHOT_RETENTION" in n for n in third["notes"]), third["notes"]
    harness.client.delete(f"/api/v1/sessions/{third['id']}", headers=harness.headers)

    # Over the limit: 16 MiB outside /workspace is skipped with the reason.
    fourth = harness.create("sam", restore=second["id"]).json()
    assert fourth["image"] == snap_b
    assert run(fourth["container_id"], f"cat {PROOF} /var/tmp/second.txt").split() == [
        "kept-outside",
        "second",
    ]
    run(fourth["container_id"], "head -c 16777216 /dev/urandom > /var/tmp/big.bin")
    harness.client.delete(f"/api/v1/sessions/{fourth['id']}", headers=harness.headers)
    skipped = core.snapshots.record(fourth["id"])
    assert skipped is not None and skipped.status == "skipped"
    assert skipped.reason is not None and "SANDMAN_SNAPSHOT_MAX_SIZE (8M)" in skipped.reason
    try:
        client.images.get(image_name(prefix, "sam", fourth["id"]))
        raise AssertionError("an over-limit layer must not be kept")
    except docker.errors.ImageNotFound:
        pass
    client.images.get(snap_b)  # the newest kept snapshot stays
    last = harness.create("sam", restore=fourth["id"]).json()
    assert any("SANDMAN_SNAPSHOT_MAX_SIZE" in n for n in last["notes"]), last["notes"]
