"""Walking and comparing trees: a faithful copy shows no difference; every kind of
loss a copy can suffer shows up."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sandman.runtime.docker.tree import Entry, differences, order, walk


def make_tree(root: Path) -> None:
    (root / "data" / "deep").mkdir(parents=True)
    (root / "data" / "deep" / "weights.bin").write_bytes(os.urandom(300_000))
    (root / "notes.txt").write_text("hello\n")
    os.chmod(root / "notes.txt", 0o640)
    os.link(root / "notes.txt", root / "data" / "notes-link.txt")
    os.symlink("data/deep/weights.bin", root / "latest")
    os.symlink("/nowhere", root / "dangling")
    os.mkfifo(root / "pipe")
    with open(root / "sparse", "wb") as handle:
        handle.truncate(10_000_000)
        handle.write(b"end")
    os.setxattr(root / "notes.txt", "user.origin", b"lab")
    os.utime(root / "data", ns=(1_000_000_000, 1_500_000_123))


def copy(source: Path, target: Path) -> None:
    target.mkdir()
    subprocess.run(["cp", "-a", f"{source}/.", f"{target}/"], check=True)


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    source, target = tmp_path / "a", tmp_path / "b"
    source.mkdir()
    make_tree(source)
    copy(source, target)
    return source, target


def test_a_faithful_copy_shows_no_difference(trees: tuple[Path, Path]) -> None:
    source, target = trees
    walked = dict(walk(source))
    assert walked["notes.txt"].xattrs == (("user.origin", b"lab"),)
    # a second name points at the first one walked
    assert walked["notes.txt"].link == "data/notes-link.txt"
    assert walked["data/notes-link.txt"].link == ""
    assert walked["latest"].target == "data/deep/weights.bin"
    assert walked["pipe"].kind == "fifo"
    assert differences(walk(source), walk(target)) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: (t / "notes.txt").write_text("HELLO\n"), "notes.txt: mtime_ns, digest"),
        (lambda t: os.chmod(t / "notes.txt", 0o644), "notes.txt: mode"),
        (lambda t: os.chown(t / "latest", 1234, 1234, follow_symlinks=False), "latest: uid, gid"),
        (lambda t: os.utime(t / "data", ns=(1, 2)), "data: mtime_ns"),
        (lambda t: (t / "pipe").unlink(), "pipe: missing from the copy"),
        (lambda t: (t / "extra").write_text(""), "extra: only in the copy"),
        (lambda t: os.removexattr(t / "notes.txt", "user.origin"), "notes.txt: xattrs"),
        (
            lambda t: [(t / "notes.txt").unlink(), (t / "notes.txt").write_text("hello\n")],
            "link",
        ),
        (
            lambda t: [(t / "dangling").unlink(), os.symlink("/elsewhere", t / "dangling")],
            "dangling: mtime_ns, target",
        ),
    ],
)
def test_every_loss_shows(trees: tuple[Path, Path], change: object, expected: str) -> None:
    source, target = trees
    assert callable(change)
    change(target)
    found = differences(walk(source), walk(target))
    assert found and any(expected in line for line in found), found


def test_differences_follow_the_walk_order() -> None:
    entry = Entry("file", 0o644, 0, 0, 0)
    a = [(".", entry), ("a", entry), ("a/b", entry), ("a-c", entry)]
    assert [p for p, _ in sorted(a, key=lambda item: order(item[0]))] == [".", "a", "a/b", "a-c"]
    assert differences(a, a) == []
    assert differences(a, [a[0], a[1], a[3]]) == ["a/b: missing from the copy"]
    assert differences(a[:2], a) == ["a/b: only in the copy", "a-c: only in the copy"]
    many = [(f"f{i:03}", entry) for i in range(30)]
    assert len(differences(many, [], limit=5)) == 6  # five and "..."
