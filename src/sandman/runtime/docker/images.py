"""Workspace images: sparse ext4 files loop-mounted on the users' workspace directories.

Layout under the workspace root::

    <user>/                   the workspace; the mount point of the user's image
    .images/<user>.img        the image (sparse: it takes disk only as it fills)
    .images/<user>.lock       held while the workspace is made ready, resized or migrated
    .migrated/<user>-<time>/  a plain directory, kept as it was after its migration

Every change to one user's workspace holds that user's lock, a file lock, so it
also holds between processes (``sandman workspaces migrate`` beside ``serve``).
Nothing here unmounts when Sandman stops: session containers outlive it.
An unmounted mount point is owned by root with mode 000, so a container started
on it by the engine alone (after a reboot, before Sandman mounts the image)
cannot write where the image will hide its files.

The decisions are in ``quota``; this module runs ``mkfs.ext4``, ``mount``,
``resize2fs`` and ``e2fsck`` around them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from sandman.domain import validate_user_id
from sandman.errors import Conflict, InvalidRequest, RuntimeFailure, SandmanError
from sandman.runtime.base import Workspace, WorkspaceUsage
from sandman.runtime.docker.quota import (
    CAP_SYS_RESOURCE,
    has_capability,
    mkfs_argv,
    mount_of,
    overcommit,
    parse_mountinfo,
    plan_resize,
    project_quotas_available,
    resize_argv,
    workspace_action,
)
from sandman.sizes import format_size

log = logging.getLogger(__name__)

MOUNT_OPTIONS = "loop,nodev,nosuid,discard"  # discard: deleted files give the disk back
WORKSPACE_MODE = 0o750  # as a plain workspace directory
DETACH_WAIT = 5.0  # seconds a loop device may take to detach after its last unmount


def _tool(name: str) -> str:
    """The tool's path (also in /usr/sbin and /sbin when PATH lacks them)."""
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise RuntimeFailure(
            f"{name} is not installed: workspace quotas need e2fsprogs and util-linux "
            "(or turn them off with SANDMAN_WORKSPACE_QUOTA=none)"
        )
    return found


def run_tool(argv: list[str], what: str, ok: tuple[int, ...] = (0,)) -> str:
    done = subprocess.run([_tool(argv[0]), *argv[1:]], capture_output=True, text=True, check=False)
    if done.returncode not in ok:
        detail = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise RuntimeFailure(f"could not {what}: {' '.join(detail[-3:]) or done.returncode}")
    return done.stdout


def mounts() -> list[tuple[str, str]]:
    """(mount point, source) of this process's mounts, in mount order."""
    entries = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    return [(e.mount_point, e.source) for e in entries]


def unmount_below(path: Path) -> list[str]:
    """Unmount everything mounted at or below ``path``, deepest first (tests, uninstall)."""
    root = str(path.resolve())
    found = [p for p, _ in mounts() if p == root or p.startswith(root + "/")]
    done = []
    for point in sorted(set(found), key=len, reverse=True):
        if subprocess.run([_tool("umount"), point], capture_output=True, check=False).returncode:
            subprocess.run([_tool("umount"), "-l", point], capture_output=True, check=False)
        done.append(point)
    return done


def loops_backed_by(image: Path) -> list[str]:
    """Loop devices whose backing file is ``image`` (one outlives its last unmount on
    this host while a container's mount namespace still holds the file system)."""
    wanted = str(image.resolve())
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with suppress(OSError):
            if backing.read_text().strip().removesuffix(" (deleted)") == wanted:
                found.append(f"/dev/{backing.parent.parent.name}")
    return found


def has_files(path: Path) -> bool:
    with os.scandir(path) as entries:
        return next(entries, None) is not None


def used_bytes(path: Path) -> int:
    """What the file system mounted at ``path`` holds (as ``df`` counts it)."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


class WorkspaceImages:
    def __init__(self, root: Path, lock_timeout: float = 30.0) -> None:
        self.root = root
        self.images_dir = root / ".images"
        self.lock_timeout = lock_timeout
        self.online_grow = has_capability(Path("/proc/self/status").read_text(), CAP_SYS_RESOURCE)

    def path(self, user_id: str) -> Path:
        return self.root / validate_user_id(user_id)

    def image(self, user_id: str) -> Path:
        return self.images_dir / f"{validate_user_id(user_id)}.img"

    @contextmanager
    def lock(self, user_id: str, timeout: float | None = None) -> Iterator[None]:
        """Hold the user's workspace lock (``Conflict`` if it stays taken past timeout)."""
        self.images_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(
            self.images_dir / f"{validate_user_id(user_id)}.lock", os.O_RDWR | os.O_CREAT, 0o600
        )
        try:
            deadline = time.monotonic() + (self.lock_timeout if timeout is None else timeout)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise Conflict(
                            f"the workspace of {user_id} is being migrated or resized; "
                            "try again later"
                        ) from None
                    time.sleep(0.1)
            yield
        finally:
            os.close(fd)  # releases the lock

    # ------------------------------------------------------------------ reads
    def usage(self, user_id: str) -> WorkspaceUsage | None:
        """Cheap (a few system calls): sessions' answers carry it."""
        path, image = self.path(user_id), self.image(user_id)
        try:
            size: int | None = image.stat().st_size
        except FileNotFoundError:
            size = None
        if size is not None and os.path.ismount(path):
            return WorkspaceUsage("image", size, used_bytes(path))
        if path.is_dir() and not path.is_symlink():
            if size is not None and not has_files(path):
                return WorkspaceUsage("image", size, None)
            return WorkspaceUsage("directory", None, None)
        return WorkspaceUsage("image", size, None) if size is not None else None

    def overcommit_warning(self, headroom: int = 0) -> str | None:
        """Whether the images promise more than the disk has (``headroom`` more free)."""
        pairs = []
        for image in self.images_dir.glob("*.img"):
            with suppress(FileNotFoundError):
                st = image.stat()
                pairs.append((st.st_size, st.st_blocks * 512))
        if not pairs:
            return None
        disk = os.statvfs(self.images_dir)
        found = overcommit(pairs, disk.f_bavail * disk.f_frsize + headroom)
        return found.message(str(self.images_dir)) if found else None

    # ------------------------------------------------------- under the user's lock
    def ensure(self, workspace: Workspace) -> Path | None:
        """Mount (or first make) the user's image; None when the workspace is a plain
        directory, which the caller makes. The caller holds the user's lock."""
        path, image = self.path(workspace.user_id), self.image(workspace.user_id)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o755)
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise RuntimeFailure(f"{path} exists and is not a directory")
        mounted = os.path.ismount(path)
        action = workspace_action(
            mounted,
            path.is_dir() and not mounted and has_files(path),
            image.exists(),
            workspace.quota_bytes,
        )
        if action == "use_directory":
            if workspace.quota_bytes is not None and path.is_dir():
                log.warning(
                    "workspace %s is a plain directory: no quota until "
                    "`sandman workspaces migrate --user %s`",
                    path,
                    workspace.user_id,
                )
            return None
        if action == "create_image":
            assert workspace.quota_bytes is not None
            started = time.monotonic()
            self.create_image(image, workspace.quota_bytes, workspace.uid, workspace.gid)
            self.mount(image, path, fresh=True)
            log.info(
                "workspace of %s: a %s image, made and mounted in %.2fs",
                workspace.user_id,
                format_size(workspace.quota_bytes),
                time.monotonic() - started,
            )
            self._warn_overcommit(workspace.quota_bytes)
        elif action == "mount_image":
            self.mount(image, path)
        if workspace.quota_bytes is not None and image.stat().st_size < workspace.quota_bytes:
            try:  # the quota grew (a new default) since the image was made
                self.resize(workspace.user_id, workspace.quota_bytes, live=False)
            except SandmanError as exc:
                log.warning("workspace of %s keeps its size: %s", workspace.user_id, exc.message)
        owner = path.stat().st_uid
        if owner != workspace.uid:
            log.warning("workspace %s is owned by uid %s, not %s", path, owner, workspace.uid)
        return path

    def resize(self, user_id: str, quota_bytes: int, live: bool) -> WorkspaceUsage:
        """Give the user's image a new size; the caller holds the user's lock."""
        path, image = self.path(user_id), self.image(user_id)
        if not os.path.ismount(path):
            self.mount(image, path)
        current = image.stat().st_size
        plan = plan_resize(current, used_bytes(path), quota_bytes, live, self.online_grow)
        if plan == "online":
            device = self._device(path)
            os.truncate(image, quota_bytes)
            run_tool(["losetup", "-c", device], f"tell {device} its file grew")
            run_tool(resize_argv(device, None), f"grow the file system of {user_id}")
        elif plan == "offline":
            self._resize_offline(user_id, quota_bytes)
        if plan != "none":
            log.info(
                "workspace of %s: %s -> %s (%s)",
                user_id,
                format_size(current),
                format_size(quota_bytes),
                plan,
            )
            if quota_bytes > current:
                self._warn_overcommit(quota_bytes - current)
        found = self.usage(user_id)
        assert found is not None
        return found

    def _resize_offline(self, user_id: str, quota_bytes: int) -> None:
        path, image = self.path(user_id), self.image(user_id)
        current = image.stat().st_size
        released = self.unmount(path, image)
        try:
            if not released:
                held = ", ".join(loops_backed_by(image))
                raise Conflict(
                    f"the workspace of {user_id} is still in use ({held} is held, by a "
                    "container most likely); end its session and retry"
                )
            self.check(image)
            if quota_bytes > current:
                os.truncate(image, quota_bytes)
                run_tool(resize_argv(str(image), None), f"grow the file system of {user_id}")
            else:
                try:
                    run_tool(
                        resize_argv(str(image), quota_bytes), f"shrink the file system of {user_id}"
                    )
                except RuntimeFailure as exc:
                    raise Conflict(
                        f"the workspace of {user_id} cannot shrink to {format_size(quota_bytes)} "
                        f"({exc.message}); free some space first or choose a larger quota"
                    ) from None
                os.truncate(image, quota_bytes)
        finally:
            self.mount(image, path)

    def restore(self) -> list[str]:
        """Mount every image not mounted (after a reboot); warnings for the log."""
        warnings = []
        root = mount_of(str(self.root), parse_mountinfo(Path("/proc/self/mountinfo").read_text()))
        if project_quotas_available(root):
            log.info(
                "%s has project quotas on; Sandman keeps workspaces with a quota in sparse "
                "images all the same (it does not use project quotas yet)",
                self.root,
            )
        for image in sorted(self.images_dir.glob("*.img")):
            user_id = image.stem
            try:
                validate_user_id(user_id)
            except InvalidRequest:
                continue
            try:
                with self.lock(user_id, timeout=0):
                    path = self.path(user_id)
                    if os.path.ismount(path):
                        continue
                    if path.is_dir() and has_files(path):
                        warnings.append(
                            f"{path} is a plain directory beside the image {image} (a migration "
                            f"that stopped half-way): run `sandman workspaces migrate --user "
                            f"{user_id}` again"
                        )
                        continue
                    self.mount(image, path)
            except SandmanError as exc:
                warnings.append(f"workspace of {user_id}: {exc.message}")
        note = self.overcommit_warning()
        return [*warnings, note] if note else warnings

    def release(self, user_id: str) -> bool:
        with self.lock(user_id):
            path, image = self.path(user_id), self.image(user_id)
            if not os.path.ismount(path):
                return False
            if not self.unmount(path, image):
                log.warning(
                    "workspace of %s unmounted here, but %s still holds it (a container)",
                    user_id,
                    ", ".join(loops_backed_by(image)),
                )
            return True

    # ------------------------------------------------------------------ steps
    def create_image(self, image: Path, size: int, uid: int, gid: int) -> None:
        """A sparse file of ``size`` bytes with an empty ext4 owned by uid:gid."""
        self.images_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = image.with_name(image.name + ".new")
        partial.unlink(missing_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        try:
            run_tool(mkfs_argv(str(partial), uid, gid), f"make a file system in {image}")
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, image)

    def mount(self, image: Path, path: Path, fresh: bool = False) -> None:
        """Mount ``image`` on ``path`` (an empty directory, made root's with mode 000
        first, so that nothing writes there while it is not mounted)."""
        path.mkdir(mode=0, exist_ok=True)
        os.chown(path, 0, 0)
        os.chmod(path, 0)
        run_tool(["mount", "-o", MOUNT_OPTIONS, str(image), str(path)], f"mount {image}")
        if fresh:
            os.chmod(path, WORKSPACE_MODE)
        lost = path / "lost+found"  # ext4's, root's: in a home it only puzzles `du`
        with suppress(OSError):
            st = lost.lstat()
            if stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and not has_files(lost):
                lost.rmdir()

    def unmount(self, path: Path, image: Path | None = None) -> bool:
        """Unmount; with ``image``, wait until no loop device holds it (the kernel detaches
        one a moment after its last unmount). False when one still does: a container's
        mount namespace holds the file system."""
        run_tool(["umount", str(path)], f"unmount {path}")
        deadline = time.monotonic() + DETACH_WAIT
        while image is not None and loops_backed_by(image):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def check(self, image: Path) -> None:
        """``e2fsck -f -p``: resize2fs wants a checked file system."""
        run_tool(["e2fsck", "-f", "-p", str(image)], f"check {image}", ok=(0, 1, 2))

    def _device(self, path: Path) -> str:
        entry = mount_of(str(path), parse_mountinfo(Path("/proc/self/mountinfo").read_text()))
        if entry is None or entry.mount_point != str(path) or "/loop" not in entry.source:
            raise RuntimeFailure(f"{path} is not a mounted workspace image")
        return entry.source

    def _warn_overcommit(self, added: int) -> None:
        """Warn when ``added`` bytes of promise tip the images over what the disk has
        (once, not at every new workspace after; start-up warns every time)."""
        note = self.overcommit_warning()
        if note and self.overcommit_warning(headroom=added) is None:
            log.warning("%s", note)
