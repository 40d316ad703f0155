"""Workspace images on this host's real file systems and loop devices (root, no Docker):
making and mounting one, resizing it, and migrating a plain directory into one
without losing a byte."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from sandman.errors import Conflict
from sandman.runtime.base import Workspace
from sandman.runtime.docker.images import WorkspaceImages, loops_backed_by, unmount_below
from sandman.runtime.docker.migration import migrate
from sandman.sizes import GIB, MIB

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting images needs root")

UID, GID = 20001, 20001


def ready(images: WorkspaceImages, user: str, quota: int | None, uid: int = UID) -> Path:
    with images.lock(user):
        found = images.ensure(Workspace(user, uid, uid, quota_bytes=quota))
    assert found is not None
    return found


def dd(path: Path, size: int) -> subprocess.CompletedProcess[str]:
    """Write ``size`` bytes (as root: the images reserve no blocks for root)."""
    return subprocess.run(
        ["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={size // MIB}", "conv=fsync"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def fill(path: Path, size: int) -> None:
    done = dd(path, size)
    assert done.returncode == 0, done.stderr


def test_a_new_workspace_is_a_sparse_image_of_its_quota(tmp_path: Path) -> None:
    images = WorkspaceImages(tmp_path / "ws")
    started = time.monotonic()
    path = ready(images, "alice", 50 * GIB)
    seconds = time.monotonic() - started
    print(f"a 50 GiB workspace image made and mounted in {seconds:.3f}s")
    assert seconds < 5
    assert os.path.ismount(path)
    assert (path.stat().st_uid, path.stat().st_gid, stat.S_IMODE(path.stat().st_mode)) == (
        UID,
        GID,
        0o750,
    )
    assert os.listdir(path) == []  # no lost+found in a home
    image = images.image("alice")
    assert image.stat().st_size == 50 * GIB and image.stat().st_blocks * 512 < 64 * MIB
    usage = images.usage("alice")
    assert usage is not None and usage.storage == "image" and usage.quota_bytes == 50 * GIB
    assert usage.used_bytes is not None and usage.used_bytes < MIB
    options = next(line for line in Path("/proc/self/mounts").read_text().splitlines()
                   if line.split()[1] == str(path)).split()[3].split(",")  # fmt: skip
    assert {"nodev", "nosuid"} <= set(options)
    # ready again: nothing to do
    assert ready(images, "alice", 50 * GIB) == path
    # without a quota, a workspace is a plain directory, as before quotas
    with images.lock("bob"):
        assert images.ensure(Workspace("bob", UID, GID)) is None


def test_writes_stop_at_the_quota_of_each_image(tmp_path: Path) -> None:
    images = WorkspaceImages(tmp_path / "ws")
    alice = ready(images, "alice", 64 * MIB)
    bob = ready(images, "bob", 128 * MIB, uid=UID)
    done = dd(alice / "big", 100 * MIB)
    assert done.returncode != 0 and "No space left on device" in done.stderr
    fill(bob / "fits", 80 * MIB)  # bob's own quota, untouched by alice filling hers
    usage = images.usage("bob")
    assert usage is not None and usage.used_bytes is not None and usage.used_bytes > 80 * MIB


def test_resizing_grows_and_shrinks_but_never_below_what_is_held(tmp_path: Path) -> None:
    images = WorkspaceImages(tmp_path / "ws")
    path = ready(images, "alice", 64 * MIB)
    fill(path / "data", 40 * MIB)
    digest = hashlib.sha256((path / "data").read_bytes()).hexdigest()
    with images.lock("alice"):
        grown = images.resize("alice", 256 * MIB, live=False)
    assert grown.quota_bytes == 256 * MIB and os.statvfs(path).f_blocks * 4096 > 200 * MIB
    fill(path / "more", 150 * MIB)
    with images.lock("alice"), pytest.raises(Conflict, match="holds"):
        images.resize("alice", 128 * MIB, live=False)
    (path / "more").unlink()
    with images.lock("alice"), pytest.raises(Conflict, match="end the session"):
        images.resize("alice", 128 * MIB, live=True)
    with images.lock("alice"):
        shrunk = images.resize("alice", 128 * MIB, live=False)
    assert shrunk.quota_bytes == 128 * MIB and images.image("alice").stat().st_size == 128 * MIB
    assert hashlib.sha256((path / "data").read_bytes()).hexdigest() == digest
    assert os.listdir(path) == ["data"]  # e2fsck's lost+found tidied away
    if images.online_grow:
        with images.lock("alice"):
            assert images.resize("alice", 192 * MIB, live=True).quota_bytes == 192 * MIB
    else:  # a container without CAP_SYS_RESOURCE (as the test machine may be)
        with images.lock("alice"), pytest.raises(Conflict, match="CAP_SYS_RESOURCE"):
            images.resize("alice", 192 * MIB, live=True)


def test_after_a_reboot_images_are_mounted_again(tmp_path: Path) -> None:
    images = WorkspaceImages(tmp_path / "ws")
    path = ready(images, "alice", 64 * MIB)
    (path / "kept").write_text("yes")
    unmount_below(tmp_path / "ws")  # what a reboot does
    # unmounted, the mount point lets no user write where the image will hide it
    assert (path.stat().st_uid, stat.S_IMODE(path.stat().st_mode)) == (0, 0)
    usage = images.usage("alice")
    assert usage is not None and (usage.storage, usage.used_bytes) == ("image", None)
    assert images.restore() == []
    assert (path / "kept").read_text() == "yes"
    # and a plain directory of the same user wins over an image, loudly
    unmount_below(tmp_path / "ws")
    os.chmod(path, 0o755)
    (path / "stray").write_text("x")
    warnings = images.restore()
    assert len(warnings) == 1 and "migrate --user alice" in warnings[0]
    assert not os.path.ismount(path)


def test_sparse_images_that_promise_more_than_the_disk_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = WorkspaceImages(tmp_path / "ws")
    ready(images, "alice", 64 * MIB)
    assert images.overcommit_warning() is None
    disk = os.statvfs(tmp_path)
    free = disk.f_bavail * disk.f_frsize
    if free + GIB > 16 * 2**40:
        pytest.skip("a disk larger than one image can promise")
    with caplog.at_level(logging.WARNING):
        ready(images, "bob", (free // GIB + 1) * GIB)  # tips the images over
        ready(images, "carol", 64 * MIB)  # already over: said once, not again
    (said,) = [r.message for r in caplog.records if "promise" in r.message]
    assert "(2 images)" in said and "add disk or lower quotas" in said
    assert any("promise" in w for w in images.restore())  # and at every start


# ---------------------------------------------------------------------- migration
def build_workspace(root: Path) -> None:
    """A workspace as users leave them: owners, modes, links, sparse and big files."""
    root.mkdir(mode=0o750)
    os.chown(root, UID, GID)
    (root / "project" / "src").mkdir(parents=True)
    (root / "project" / "src" / "train.py").write_text("print('hi')\n")
    (root / "big.bin").write_bytes(os.urandom(48 * MIB))
    with open(root / "sparse.img", "wb") as handle:
        handle.truncate(256 * MIB)  # holds almost nothing: must stay sparse to fit
        handle.write(b"tail")
    os.link(root / "big.bin", root / "project" / "big-again.bin")
    os.symlink("project/src/train.py", root / "train")
    os.symlink("/does/not/exist", root / "dangling")
    (root / "secret").write_text("s3cret")
    os.chmod(root / "secret", 0o600)
    (root / "script.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "script.sh", 0o4755)
    (root / "with space\nand newline").write_text("odd")
    os.mkfifo(root / "fifo")
    os.setxattr(root / "project" / "src" / "train.py", "user.note", b"keep me")
    (root / "root-owned").write_text("admin left this")
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            if name != "root-owned":
                os.chown(os.path.join(folder, name), UID, GID, follow_symlinks=False)
    os.utime(root / "project", ns=(1_600_000_000_000_000_001, 1_600_000_000_123_456_789))


def inventory(root: Path) -> dict[str, tuple[object, ...]]:
    """An independent record of a tree: sha256, owner, mode, mtime, link target, inode group."""
    found: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for folder, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            full = os.path.join(folder, name)
            st = os.lstat(full)
            kind = stat.S_IFMT(st.st_mode)
            digest = ""
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(Path(full).read_bytes()).hexdigest()
            linked = inodes.setdefault(st.st_ino, os.path.relpath(full, root))
            found[os.path.relpath(full, root)] = (
                kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns,
                st.st_size, digest, os.readlink(full) if stat.S_ISLNK(st.st_mode) else "",
                linked,
            )  # fmt: skip
    return found


def test_migration_keeps_every_byte_and_the_original(tmp_path: Path) -> None:
    images = WorkspaceImages(tmp_path / "ws")
    path = images.path("carol")
    images.root.mkdir(parents=True)
    build_workspace(path)
    before = inventory(path)
    top = path.stat()
    started = time.monotonic()
    with images.lock("carol"):
        said = migrate(images, "carol", 128 * MIB)
    seconds = time.monotonic() - started
    held = sum(st.st_blocks for st in (os.lstat(path / n) for n in os.listdir(path))) * 512
    print(f"migrated about {held / MIB:.0f} MiB in {seconds:.2f}s")
    assert said is not None and ".migrated/carol-" in said
    assert os.path.ismount(path)
    assert inventory(path) == before
    st = path.stat()
    assert (st.st_uid, st.st_gid, st.st_mode, st.st_mtime_ns) == (
        top.st_uid,
        top.st_gid,
        top.st_mode,
        top.st_mtime_ns,
    )
    assert os.getxattr(path / "project/src/train.py", "user.note") == b"keep me"
    assert (path / "sparse.img").stat().st_blocks * 512 < MIB  # still sparse
    (aside,) = (images.root / ".migrated").iterdir()
    assert inventory(aside) == before  # the original, untouched
    assert not list(images.images_dir.glob("carol.img.*"))
    with images.lock("carol"):
        assert migrate(images, "carol", 128 * MIB) is None  # nothing left to move
    usage = images.usage("carol")
    assert usage is not None and usage.storage == "image" and usage.quota_bytes == 128 * MIB


def test_a_migration_that_cannot_fit_changes_nothing(tmp_path: Path) -> None:
    images = WorkspaceImages(tmp_path / "ws")
    path = images.path("dave")
    images.root.mkdir(parents=True)
    build_workspace(path)
    (path / "huge.bin").write_bytes(os.urandom(70 * MIB))
    before = inventory(path)
    with images.lock("dave"), pytest.raises(Conflict, match="raise the quota first"):
        migrate(images, "dave", 64 * MIB)
    assert inventory(path) == before and not os.path.ismount(path)
    assert not list(images.images_dir.glob("dave.img*"))
    assert not (images.root / ".migrated").exists()
    assert loops_backed_by(images.image("dave")) == []


def test_an_interrupted_migration_leaves_the_directory_in_charge(tmp_path: Path) -> None:
    images = WorkspaceImages(tmp_path / "ws")
    path = images.path("erin")
    images.root.mkdir(parents=True)
    build_workspace(path)
    before = inventory(path)
    # stopped after its verified image took its name, before the directory was moved
    images.create_image(images.image("erin"), 128 * MIB, UID, GID)
    with images.lock("erin"):
        assert images.ensure(Workspace("erin", UID, GID, quota_bytes=128 * MIB)) is None
    assert not os.path.ismount(path) and inventory(path) == before
    with images.lock("erin"):
        assert migrate(images, "erin", 128 * MIB) is not None
    assert os.path.ismount(path) and inventory(path) == before
