"""Workspace quotas end to end: real Docker, real loop-mounted images, writes from
inside the containers as the users, and ``sandman workspaces migrate``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.integration.conftest import TEST_NETWORK, Harness
from tests.integration.support import TOKEN

from sandman.store.models import User

MIB = 2**20


def run_in(h: Harness, session: dict[str, Any], script: str) -> tuple[int | None, str]:
    """A shell command inside the session's container, as the session's user."""
    with h.core.db.read() as db:
        user = db.get_one(User, session["user_id"])
        who = f"{user.uid}:{user.gid}"
    result = h.core.runtime.exec(session["container_id"], ["sh", "-c", script], who, 120)
    return result.exit_code, result.output


def test_a_write_past_the_quota_fails_in_the_container_and_others_write_on(
    make_harness: Any,
) -> None:
    h: Harness = make_harness(workspace_quota="64m")
    assert (
        h.client.put(
            "/api/v1/users/bob/workspace", json={"quota_bytes": 128 * MIB}, headers=h.headers
        ).status_code
        == 200
    )
    alice = h.create("alice").json()
    bob = h.create("bob").json()
    assert alice["workspace_quota"]["quota_bytes"] == 64 * MIB
    assert bob["workspace_quota"]["quota_bytes"] == 128 * MIB

    code, output = run_in(h, alice, "dd if=/dev/zero of=/workspace/big bs=1M count=100")
    assert code != 0 and "No space left on device" in output, output
    assert run_in(h, alice, "ls -A /workspace") == (0, "big\n")  # no lost+found
    code, output = run_in(h, bob, "dd if=/dev/zero of=/workspace/fits bs=1M count=100 && sync")
    assert code == 0, output
    code, output = run_in(h, alice, "rm /workspace/big && echo ok > /workspace/after")
    assert code == 0, output  # freeing space makes room again

    got = h.client.get("/api/v1/users/bob/workspace", headers=h.headers).json()
    assert got["storage"] == "image" and got["used_bytes"] >= 100 * MIB
    listed = h.client.get("/api/v1/sessions", headers=h.headers).json()
    by_user = {s["user_id"]: s["workspace_quota"] for s in listed}
    assert by_user["bob"]["used_bytes"] >= 100 * MIB


def test_a_quota_grows_and_the_session_sees_it(make_harness: Any) -> None:
    h: Harness = make_harness(workspace_quota="64m")
    session = h.create("grace").json()
    put = h.client.put(
        "/api/v1/users/grace/workspace", json={"quota_bytes": 192 * MIB}, headers=h.headers
    )
    if h.core.runtime.files.images.online_grow:  # type: ignore[attr-defined]
        assert put.status_code == 200, put.text
    else:  # this host cannot grow a mounted ext4 (no CAP_SYS_RESOURCE): said plainly
        assert put.status_code == 409 and "CAP_SYS_RESOURCE" in put.json()["error"]
        shrink = h.client.put(
            "/api/v1/users/grace/workspace", json={"quota_bytes": 64 * MIB}, headers=h.headers
        )
        assert shrink.status_code == 200  # the same size: nothing to do
        h.client.delete(f"/api/v1/sessions/{session['session_id']}", headers=h.headers)
        put = h.client.put(
            "/api/v1/users/grace/workspace", json={"quota_bytes": 192 * MIB}, headers=h.headers
        )
        assert put.status_code == 200, put.text
        session = h.create("grace").json()
    got = h.client.get("/api/v1/users/grace/workspace", headers=h.headers).json()
    assert (got["quota_bytes"], got["own_quota"]) == (192 * MIB, True)
    assert session["workspace_quota"]["quota_bytes"] == 192 * MIB
    code, output = run_in(h, session, "dd if=/dev/zero of=/workspace/big bs=1M count=150")
    assert code == 0, output
    # a shrink below what it holds is refused, whatever runs
    h.client.delete(f"/api/v1/sessions/{session['session_id']}", headers=h.headers)
    refused = h.client.put(
        "/api/v1/users/grace/workspace", json={"quota_bytes": 100 * MIB}, headers=h.headers
    )
    assert refused.status_code == 409 and "holds" in refused.json()["error"]


def _cli(h: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SANDMAN_DATA_DIR": str(h.data_dir),
        "SANDMAN_ADMIN_TOKEN": TOKEN,
        "SANDMAN_NETWORK_NAME": TEST_NETWORK,
        "SANDMAN_CONTAINER_PREFIX": h.core.settings.container_prefix,
        "SANDMAN_WORKSPACE_QUOTA": "256m",
        "SANDMAN_SSH_MODE": "direct",
        "SANDMAN_LOG_LEVEL": "WARNING",
    }
    return subprocess.run(
        [sys.executable, "-m", "sandman.cli", "workspaces", *args],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def _digests(root: Path) -> dict[str, tuple[str, int, int, int]]:
    found = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            full = Path(folder, name)
            st = full.lstat()
            digest = "" if full.is_symlink() else hashlib.sha256(full.read_bytes()).hexdigest()
            found[str(full.relative_to(root))] = (digest, st.st_uid, st.st_gid, st.st_mode)
    return found


def test_migrate_moves_a_plain_workspace_and_waits_for_its_session(
    make_harness: Any,
) -> None:
    # quotas off: the workspace is a plain directory, as before quotas existed
    h: Harness = make_harness(workspace_quota="none")
    session = h.create("heidi").json()
    code, output = run_in(
        h,
        session,
        "cd /workspace && head -c 30000000 /dev/urandom > data.bin && ln data.bin hard.bin && "
        "ln -s data.bin soft && mkdir -p src && echo 'print(1)' > src/a.py && "
        "chmod 600 src/a.py && chmod 2750 src",
    )
    assert code == 0, output
    workspace = h.core.runtime.files.workspace("heidi")  # type: ignore[attr-defined]
    assert not os.path.ismount(workspace)
    before = _digests(workspace)

    refused = _cli(h, "migrate", "--user", "heidi")
    assert refused.returncode == 1 and "end it before migrating" in refused.stderr

    h.client.delete(f"/api/v1/sessions/{session['session_id']}", headers=h.headers)
    done = _cli(h, "migrate", "--user", "heidi")
    assert done.returncode == 0, done.stderr
    assert "heidi:" in done.stderr and ".migrated/heidi-" in done.stderr
    assert os.path.ismount(workspace)
    assert _digests(workspace) == before
    assert os.stat(workspace / "hard.bin").st_ino == os.stat(workspace / "data.bin").st_ino
    assert os.readlink(workspace / "soft") == "data.bin"
    (aside,) = (workspace.parent / ".migrated").iterdir()
    assert _digests(aside) == before

    listed = _cli(h, "list")
    assert listed.returncode == 0 and "heidi" in listed.stdout and "image" in listed.stdout
    again = _cli(h, "migrate")
    assert again.returncode == 0 and "heidi: nothing to move" in again.stderr
