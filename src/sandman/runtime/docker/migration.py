"""Moving a plain workspace directory into an image, without losing a byte.

1. A new image of the user's quota is made and mounted aside
   (``.images/<user>.img.migrating`` on ``.images/<user>.migrating``).
2. ``cp -a`` copies the directory into it: owners, modes, times, hard and
   symbolic links, special files, extended attributes (ACLs among them) where
   the image can hold them.
3. Both trees are walked and compared entry by entry, contents by sha256; any
   difference discards the copy and leaves the original untouched.
4. The swap, each step safe to be interrupted: the verified image becomes
   ``<user>.img`` (a plain directory with files still wins over an image, so an
   interrupted migration changes nothing a session sees); the directory is
   renamed to ``.migrated/<user>-<time>`` (the image now wins); the image is
   mounted on the workspace path.

The original is never deleted: it stays under ``.migrated`` until an
administrator removes it.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from datetime import UTC, datetime
from pathlib import Path

from sandman.errors import Conflict, RuntimeFailure
from sandman.runtime.docker.images import WorkspaceImages, has_files, loops_backed_by, run_tool
from sandman.runtime.docker.tree import differences, walk
from sandman.sizes import format_size

log = logging.getLogger(__name__)


def tree_bytes(root: Path) -> int:
    """Disk the tree takes, each file once however many names it has (``du``)."""
    seen: set[int] = set()
    total = 0
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(folder, name))
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                if st.st_ino in seen:
                    continue
                seen.add(st.st_ino)
            total += st.st_blocks * 512
    return total


def migrate(images: WorkspaceImages, user_id: str, quota_bytes: int) -> str | None:
    """Move the user's plain workspace into an image; the caller holds the user's lock
    and knows no session uses the workspace. None when there is nothing to move."""
    path, image = images.path(user_id), images.image(user_id)
    if os.path.ismount(path) or not path.is_dir() or path.is_symlink() or not has_files(path):
        return None
    held = tree_bytes(path)
    if held > quota_bytes:
        raise Conflict(
            f"the workspace of {user_id} holds {format_size(held)}, more than its quota of "
            f"{format_size(quota_bytes)}; raise the quota first (PUT /users/{user_id}/workspace)"
        )
    started = time.monotonic()
    partial = image.with_name(image.name + ".migrating")
    mount_point = images.images_dir / f"{user_id}.migrating"
    _discard(images, partial, mount_point)
    if loops_backed_by(image):
        raise Conflict(f"the image {image} is in use; unmount it before migrating {user_id}")
    image.unlink(missing_ok=True)  # left by a migration stopped before its swap
    st = path.stat()
    images.create_image(partial, quota_bytes, st.st_uid, st.st_gid)
    try:
        images.mount(partial, mount_point)
        try:
            run_tool(
                ["cp", "-a", "--sparse=auto", "--", f"{path}/.", f"{mount_point}/"],
                f"copy the workspace of {user_id}",
            )
        except RuntimeFailure as exc:
            if "No space left" in exc.message:
                raise Conflict(
                    f"the workspace of {user_id} does not fit in {format_size(quota_bytes)} "
                    "(the file system's own tables take some); raise the quota first"
                ) from None
            raise
        found = differences(walk(path), walk(mount_point))
        if found:
            raise RuntimeFailure(
                f"the copy of {user_id}'s workspace differs from it, so nothing changed: "
                + "; ".join(found)
            )
        if not images.unmount(mount_point, partial):
            raise RuntimeFailure(f"{partial} stayed in use after its unmount; nothing changed")
    except BaseException:
        _discard(images, partial, mount_point)
        raise
    mount_point.rmdir()
    os.replace(partial, image)
    aside_dir = images.root / ".migrated"
    aside_dir.mkdir(mode=0o700, exist_ok=True)
    aside = aside_dir / f"{user_id}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    os.rename(path, aside)
    images.mount(image, path)
    seconds = time.monotonic() - started
    log.info(
        "workspace of %s: %s moved into a %s image in %.1fs; the original is at %s",
        user_id,
        format_size(held),
        format_size(quota_bytes),
        seconds,
        aside,
    )
    return (
        f"{user_id}: {format_size(held)} moved into a {format_size(quota_bytes)} image and "
        f"verified in {seconds:.1f}s; the original is kept at {aside} (delete it when satisfied)"
    )


def _discard(images: WorkspaceImages, partial: Path, mount_point: Path) -> None:
    """Remove what an unfinished migration left: its mount, image and mount point."""
    if os.path.ismount(mount_point):
        images.unmount(mount_point, partial)
    if mount_point.is_dir():
        mount_point.rmdir()
    partial.unlink(missing_ok=True)
