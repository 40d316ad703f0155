"""Workspace quotas on a Docker host: the decisions, with no I/O.

A workspace with a quota is a sparse file holding an ext4 file system
(``<workspace root>/.images/<user>.img``), loop-mounted on the user's workspace
directory before a session starts. The kernel then refuses writes past the
quota with "No space left on device", whatever the file system of the
workspace root, and one user filling their workspace leaves the others alone.

Project quotas (XFS, or ext4 with the ``project`` feature, mounted with
``prjquota``) would do the same without images; Sandman recognises a root that
has them (``project_quotas_available``) and says so, but uses images
everywhere for now.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from sandman.errors import Conflict
from sandman.sizes import format_size

BLOCK_SIZE = 4096
CAP_SYS_RESOURCE = 24  # needed to grow a mounted ext4 (EXT4_IOC_RESIZE_FS)


Action = Literal["use_mounted", "use_directory", "mount_image", "create_image"]


def workspace_action(
    mounted: bool, directory_has_files: bool, image_exists: bool, quota_bytes: int | None
) -> Action:
    """What making a workspace ready means, from what is on disk.

    A plain directory holding files always wins over an image: it is a workspace
    from before quotas (or one whose migration stopped before the swap, which
    leaves its verified image aside), and only ``sandman workspaces migrate``
    moves it. An image is mounted whatever the quota setting, so turning quotas
    off never hides anyone's files; without a quota, new workspaces are plain
    directories.
    """
    if mounted:
        return "use_mounted"
    if directory_has_files:
        return "use_directory"
    if image_exists:
        return "mount_image"
    return "use_directory" if quota_bytes is None else "create_image"


Resize = Literal["none", "online", "offline"]


def plan_resize(
    current: int, used: int | None, wanted: int, live: bool, online_grow: bool
) -> Resize:
    """How to give an image of ``current`` bytes, holding ``used``, the size ``wanted``.

    Growing a mounted ext4 works online where the process may (``online_grow``:
    CAP_SYS_RESOURCE); anything else unmounts the file system, so only with no
    session using it (``live`` false).
    """
    if used is not None and wanted < used:
        raise Conflict(
            f"the workspace holds {format_size(used)} ({used} bytes), more than "
            f"{format_size(wanted)}; free some space first or choose a larger quota"
        )
    if wanted == current:
        return "none"
    if wanted > current and online_grow:
        return "online"
    if live:
        why = (
            "shrinking it needs its file system unmounted"
            if wanted < current
            else "this host cannot grow a mounted file system (Sandman lacks CAP_SYS_RESOURCE)"
        )
        raise Conflict(f"a session uses this workspace and {why}; end the session and retry")
    return "offline"


def has_capability(proc_status: str, capability: int) -> bool:
    """Whether ``/proc/self/status`` (its text) shows the capability as effective."""
    for line in proc_status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> capability & 1)
    return False


def mkfs_argv(image: str, uid: int, gid: int) -> list[str]:
    """An ext4 for one user's files: 4 KiB blocks whatever the size (so it grows well),
    no blocks reserved for root, the root directory the user's, tables zeroed lazily."""
    return [
        "mkfs.ext4", "-F", "-q", "-b", str(BLOCK_SIZE), "-I", "256", "-i", "16384", "-m", "0",
        "-E", f"root_owner={uid}:{gid},lazy_itable_init=1,lazy_journal_init=1",
        image,
    ]  # fmt: skip


def resize_argv(target: str, size_bytes: int | None) -> list[str]:
    """``resize2fs`` of a device or an image; None grows to fill it."""
    size = [] if size_bytes is None else [f"{size_bytes // BLOCK_SIZE * (BLOCK_SIZE // 1024)}K"]
    return ["resize2fs", target, *size]


@dataclass(frozen=True)
class Overcommit:
    promised: int  # the sum of every image's size
    available: int  # free space, plus what the images already take
    images: int

    def message(self, where: str) -> str:
        return (
            f"workspace images under {where} promise {format_size(self.promised)} in all "
            f"({self.images} images) but the disk has {format_size(self.available)} for them: "
            "once it fills, writes fail in every workspace even below its quota; add disk "
            "or lower quotas"
        )


def overcommit(images: Iterable[tuple[int, int]], free_bytes: int) -> Overcommit | None:
    """Sparse images take disk as they fill; ``images`` are (size, allocated) pairs.
    Overcommitted when their sizes add up to more than free space plus what they hold."""
    sizes = list(images)
    promised = sum(size for size, _ in sizes)
    available = free_bytes + sum(allocated for _, allocated in sizes)
    if promised > available:
        return Overcommit(promised, available, len(sizes))
    return None


@dataclass(frozen=True)
class MountEntry:
    mount_point: str
    source: str
    fs_type: str
    options: frozenset[str]  # per-mount and super options together


def _unescape(field: str) -> str:
    """Mount points escape space, tab, newline and backslash as octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """``/proc/self/mountinfo`` as entries, in mount order."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if dash < 6 or len(fields) < dash + 3:
            continue
        options = {*fields[5].split(","), *fields[dash + 3].split(",")}
        entries.append(
            MountEntry(_unescape(fields[4]), fields[dash + 2], fields[dash + 1], frozenset(options))
        )
    return entries


def mount_of(path: str, mounts: Sequence[MountEntry]) -> MountEntry | None:
    """The mount holding ``path`` (an absolute, resolved path): the last one mounted
    at the longest mount point above it."""
    best: MountEntry | None = None
    for entry in mounts:
        point = entry.mount_point.rstrip("/") or "/"
        inside = path == point or path.startswith(point if point == "/" else point + "/")
        if inside and (best is None or len(point) >= len(best.mount_point.rstrip("/") or "/")):
            best = entry
    return best


def project_quotas_available(entry: MountEntry | None) -> bool:
    """Whether the file system has project quotas on (XFS, or ext4 with ``project``)."""
    if entry is None or entry.fs_type not in ("xfs", "ext4"):
        return False
    return bool(entry.options & {"prjquota", "pquota"})
