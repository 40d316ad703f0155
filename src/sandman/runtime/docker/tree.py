"""A directory tree entry by entry: every entry's type, owner, mode, modification
time, hard links, extended attributes and content digest (``walk``), and what
differs between two such walks (``differences``, pure). A migration swaps a
workspace only when its copy shows no difference from the original."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    kind: str  # "file", "dir", "symlink", "fifo", "socket", "char", "block"
    mode: int  # permission bits, with setuid, setgid and sticky
    uid: int
    gid: int
    mtime_ns: int
    size: int = 0  # files
    digest: str = ""  # files: sha256 of the content
    target: str = ""  # symlinks
    rdev: int = 0  # devices
    link: str = ""  # files with several names in the tree: the first of them
    xattrs: tuple[tuple[str, bytes], ...] = ()


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "dir"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "char"),
        (stat.S_ISBLK, "block"),
    ):
        if test(mode):
            return name
    return "other"


def _digest(path: str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
        return tuple(
            sorted((name, os.getxattr(path, name, follow_symlinks=False)) for name in names)
        )
    except OSError:  # a file system without them
        return ()


def walk(root: Path) -> Iterator[tuple[str, Entry]]:
    """Every entry below ``root`` (``"."`` is root itself) by relative path, depth first
    with names sorted (``order`` is the sort key); symlinks are not followed. Reads every
    file once and keeps in memory only the names of files with several names."""
    first_name: dict[int, str] = {}
    pending = ["."]
    while pending:
        relative = pending.pop()
        full = os.path.join(root, relative) if relative != "." else str(root)
        st = os.lstat(full)
        kind = _kind(st.st_mode)
        link = ""
        if kind == "file" and st.st_nlink > 1:
            first = first_name.setdefault(st.st_ino, relative)
            link = first if first != relative else ""
        yield (
            relative,
            Entry(
                kind=kind,
                mode=stat.S_IMODE(st.st_mode),
                uid=st.st_uid,
                gid=st.st_gid,
                mtime_ns=st.st_mtime_ns,
                size=st.st_size if kind == "file" else 0,
                digest=_digest(full) if kind == "file" else "",
                target=os.readlink(full) if kind == "symlink" else "",
                rdev=st.st_rdev if kind in ("char", "block") else 0,
                link=link,
                xattrs=_xattrs(full),
            ),
        )
        if kind == "dir":
            with os.scandir(full) as entries:
                names = sorted((e.name for e in entries), reverse=True)
            pending.extend(name if relative == "." else f"{relative}/{name}" for name in names)


def order(relative: str) -> tuple[str, ...]:
    """The order ``walk`` yields paths in."""
    return () if relative == "." else tuple(relative.split("/"))


def differences(
    original: Iterable[tuple[str, Entry]], copy: Iterable[tuple[str, Entry]], limit: int = 20
) -> list[str]:
    """What the copy lacks, adds or holds differently, at most ``limit`` lines; both
    in ``walk``'s order."""
    found: list[str] = []
    left, right = iter(original), iter(copy)
    a, b = next(left, None), next(right, None)
    while (a is not None or b is not None) and len(found) < limit:
        if b is None or (a is not None and order(a[0]) < order(b[0])):
            assert a is not None
            found.append(f"{a[0]}: missing from the copy")
            a = next(left, None)
        elif a is None or order(b[0]) < order(a[0]):
            found.append(f"{b[0]}: only in the copy")
            b = next(right, None)
        else:
            if a[1] != b[1]:
                fields = [
                    f for f in Entry.__dataclass_fields__ if getattr(a[1], f) != getattr(b[1], f)
                ]
                found.append(f"{a[0]}: {', '.join(fields)} differ")
            a, b = next(left, None), next(right, None)
    if len(found) >= limit and (a is not None or b is not None):
        found.append("...")
    return found
