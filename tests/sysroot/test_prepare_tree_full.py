"""`sapwood admin prepare-tree` on a full filesystem: what the plan cannot see fails
midway in one line naming what was done; the tree is as that line says (each step
listed done, nothing else, no temporary file left), and a second run, once there is
room, finishes."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import sapwood
from fs.sysroot.prepare_tree import TMPFILES
from tests.helpers import IS_ROOT, fill_inodes, run, small_tmpfs
from tests.sysroot.conftest import small_tree, tree_state

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="mounting a small tmpfs needs root")

# what prepare-tree makes of each link (tests/sysroot/test_prepare_tree.py LINKS, DPKG)
TARGETS = {
    "home": "var/home",
    "root": "var/roothome",
    "opt": "var/opt",
    "srv": "var/srv",
    "mnt": "var/mnt",
    "usr/local": "../var/usrlocal",
    "var/lib/dpkg": "../../usr/lib/sysimage/dpkg",
}


def _unprepared(root: Path) -> Path:
    files = {"root/.profile": "# root\n", "home/alice/notes": "mine\n", "usr/local/bin": "/"}
    files |= {"srv": "/", "var/lib/dpkg/status": "Package: openssl\nVersion: 1\n"}
    return small_tree(root, files)


def _fill_blocks(disk: Path) -> Path:
    """Every block of ``disk`` taken by one file (removed to make room)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * (4 << 10))
    assert os.statvfs(disk).f_bavail == 0
    return filler


@contextlib.contextmanager
def _inodes_left(disk: Path, left: int) -> Iterator[None]:
    """All inodes of ``disk`` but ``left`` taken by empty files (removed after)."""
    fillers = fill_inodes(disk, left)
    try:
        yield
    finally:
        for name in os.listdir(fillers):
            (fillers / name).unlink()
        fillers.rmdir()


def _done_lines(stderr: str) -> list[str]:
    """The steps the failure's one line lists as done."""
    match = re.search(r"; done before it: (.*); run it again once that is fixed", stderr)
    assert match, stderr
    return [] if match.group(1) == "nothing" else match.group(1).split("; ")


MADE = {"opt", "mnt"}  # absent from the tree: made empty, then linked


def _assert_as_said(tree: Path, done: list[str]) -> None:
    """Each link the line lists is there; each it does not is as it was (the directory
    where it was, or absent with no place made for it); no temporary file anywhere."""
    for link, target in TARGETS.items():
        place = (tree / link).parent / target
        if any(line.startswith(f"{link} -> ") for line in done):
            assert os.readlink(tree / link) == target, link
            assert (tree / link).resolve().is_dir(), link
        elif link in MADE:
            assert not os.path.lexists(tree / link) and not os.path.lexists(place), link
        else:
            assert (tree / link).is_dir() and not (tree / link).is_symlink(), link
            assert not os.path.lexists(place), link
    assert (f"{TMPFILES}: written" in done) == (tree / TMPFILES).exists()
    leftovers = [
        str(path.relative_to(tree))
        for path in tree.rglob("*")
        if "sapwood-new" in path.name or path.name.startswith(".sapwood")
    ]
    assert leftovers == []


def _one_line_failure(tree: Path) -> str:
    proc = run("admin", "prepare-tree", tree, text=True)
    assert proc.returncode != 0
    assert proc.stderr.startswith("sapwood: error: ") and proc.stderr.count("\n") == 1
    assert "No space left on device" in proc.stderr
    assert proc.stdout == ""
    return proc.stderr


def test_a_full_disk_when_the_tmpfiles_snippet_is_written(tmp_path: Path) -> None:
    """Moves and links take no block of a tmpfs: the snippet's bytes are the first that
    do not fit. Its temporary file is not left behind."""
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        tree = _unprepared(disk / "tree")
        filler = _fill_blocks(disk)
        stderr = _one_line_failure(tree)
        done = _done_lines(stderr)
        assert len(done) == len(TARGETS) and f"{TMPFILES}: written" not in done
        _assert_as_said(tree, done)
        assert (tree / "var/home/alice/notes").read_text() == "mine\n"
        filler.unlink()
        assert sapwood.prepare_tree(tree) == [f"{TMPFILES}: written"]
        _assert_as_said(tree, [*done, f"{TMPFILES}: written"])
        state = tree_state(tree)
        assert sapwood.prepare_tree(tree) == []
        assert tree_state(tree) == state


@pytest.mark.parametrize("left", [0, 2, 3, 5])
def test_no_inode_left_midway(tmp_path: Path, left: int) -> None:
    """A link or a directory made is an inode: with ``left`` of them the run stops at
    the step that needs one more, its line names what was done before it, and the next
    run finishes the rest."""
    with small_tmpfs(tmp_path / "disk", "4m,nr_inodes=400") as disk:  # filled at once
        tree = _unprepared(disk / "tree")
        with _inodes_left(disk, left):
            stderr = _one_line_failure(tree)
            done = _done_lines(stderr)
            assert len(done) < len(TARGETS)  # stopped before the last link
            assert (done == []) == (left == 0)
            _assert_as_said(tree, done)
        rest = sapwood.prepare_tree(tree)
        assert len(done) + len(rest) == len(TARGETS) + 1
        _assert_as_said(tree, done + rest)
        assert (tree / "var/home/alice/notes").read_text() == "mine\n"
        assert (tree / "var/roothome/.profile").read_text() == "# root\n"


def test_the_library_tells_a_full_disk_apart(tmp_path: Path) -> None:
    """sapwood.prepare_tree raises OutOfSpaceError for a full disk (as deploy does), with
    the same line the command prints; the tree is as that line says."""
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        tree = _unprepared(disk / "tree")
        _fill_blocks(disk)
        with pytest.raises(sapwood.OutOfSpaceError) as caught:
            sapwood.prepare_tree(tree)
        assert not isinstance(caught.value, sapwood.TreeLayoutError)
        message = str(caught.value)
        assert "No space left on device" in message and "\n" not in message
        _assert_as_said(tree, _done_lines(message))


def test_a_failure_midway_other_than_space_stays_a_layout_error(tmp_path: Path) -> None:
    """A mount point where a directory is to move (rename: EBUSY) fails midway too, and
    is still the TreeLayoutError it was: only ENOSPC and EDQUOT are OutOfSpaceError."""
    tree = _unprepared(tmp_path / "tree")
    home = tree / "home"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(home)], check=True)
    try:
        with pytest.raises(sapwood.TreeLayoutError) as caught:
            sapwood.prepare_tree(tree)
    finally:
        subprocess.run(["umount", str(home)], check=True)
    assert not isinstance(caught.value, sapwood.OutOfSpaceError)
    assert "run it again once that is fixed" in str(caught.value)
    assert (tree / "home/alice/notes").read_text() == "mine\n"
