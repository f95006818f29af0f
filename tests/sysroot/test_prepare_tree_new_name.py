"""prepare-tree makes a place under its temporary name, .NAME.sapwood-new, and renames it
to its name once it has its mode (session19 d6): what could go wrong there. Whatever
holds that name is refused before any change (an empty directory is a killed run's,
removed); a symlink swapped in at it or at the place's parent is never followed; a
directory made at the place meanwhile is never replaced; a failed rename is undone."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

import sapwood
from fs.sysroot import nofollow
from fs.sysroot import prepare_tree as prepare_tree_module
from fs.sysroot.nofollow import NEW
from store import OutOfSpaceError, TreeLayoutError
from tests.helpers import IS_ROOT, run
from tests.sysroot.conftest import after_mkdir, small_tree
from tests.sysroot.conftest import tree_shape as _shape

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="a tree with root's modes needs root")

# home and root moved first, then var/opt made (opt absent) under NEW_OPT; usr/lib is
# made (under NEW_LIB) for the tmpfiles snippet
FILES = {"home/alice/notes": "mine\n", "root/.profile": "# root\n", "usr/local/bin": "/"}
NEW_OPT = f"var/.opt{NEW}"
NEW_LIB = f"usr/.lib{NEW}"


def _outside(tmp_path: Path) -> Path:
    """A directory outside the tree, 0700, with a file: what a symlink may point to."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "theirs").write_text("outside\n")
    for name in ("opt", ".opt" + NEW):
        (outside / name).mkdir()  # what a step would find there
    os.chmod(outside, 0o700)
    return outside


def _hold(held: Path, what: str, outside: Path) -> None:
    if what == "a symlink":
        held.symlink_to(outside)
    elif what == "a FIFO":
        os.mkfifo(held)
    elif what == "a file":
        held.write_text("the user's\n")
    else:  # a directory with the user's files
        held.mkdir()
        (held / "keep").write_text("the user's\n")


@pytest.mark.parametrize("name", [NEW_OPT, NEW_LIB])
@pytest.mark.parametrize("what", ["a symlink", "a FIFO", "a file", "a directory with files"])
def test_what_holds_the_temporary_name_is_refused_before_any_change(
    tmp_path: Path, what: str, name: str
) -> None:
    """One line naming the temporary name (of a place, or of a directory made on the
    way), a non-zero exit, nothing changed (the moves before var/opt's step not made),
    at this run and the next; a symlink there never followed, a FIFO never opened."""
    tree = small_tree(tmp_path / "tree", FILES, kernel=False)
    outside = _outside(tmp_path)
    _hold(tree / name, what, outside)
    before, outside_before = _shape(tree), _shape(outside)
    for _ in range(2):
        proc = run("admin", "prepare-tree", tree, text=True, timeout=60)
        assert proc.returncode != 0 and proc.stdout == "", proc.stdout
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert os.path.basename(name) in proc.stderr and "nothing was changed" in proc.stderr
        assert _shape(tree) == before
    assert _shape(outside) == outside_before
    assert stat.S_IMODE(os.stat(outside).st_mode) == 0o700


def test_an_empty_directory_at_the_temporary_name_is_a_killed_runs(tmp_path: Path) -> None:
    """An empty directory at a temporary name (a run killed before its rename, with the
    umask's mode), of a place or of a directory on the way, is removed; each is made
    with the plan's mode."""
    tree = small_tree(tmp_path / "tree", FILES, kernel=False)
    for name in (NEW_OPT, NEW_LIB, f".var{NEW}"):
        (tree / name).mkdir(mode=0o700)
    sapwood.prepare_tree(tree)
    assert not [path for path in tree.rglob(f"*{NEW}")]
    assert stat.S_IMODE(os.lstat(tree / "var/opt").st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(tree / "usr/lib").st_mode) == 0o755
    assert os.readlink(tree / "opt") == "var/opt"


def test_what_holds_a_temporary_name_no_step_needs_stays(tmp_path: Path) -> None:
    """A tree laid out already: an empty directory at a temporary name goes, anything
    else there (not sapwood's) stays as it is, and the run has nothing to do."""
    tree = small_tree(tmp_path / "tree", FILES, kernel=False)
    sapwood.prepare_tree(tree)
    (tree / NEW_OPT).mkdir()
    (tree / NEW_OPT / "keep").write_text("the user's\n")
    (tree / f"var/.srv{NEW}").mkdir()
    assert sapwood.prepare_tree(tree) == []
    assert (tree / NEW_OPT / "keep").read_text() == "the user's\n"
    assert not os.path.lexists(tree / f"var/.srv{NEW}")


def test_a_symlink_swapped_in_at_the_temporary_name_is_never_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory just made at var/.opt.sapwood-new replaced by a symlink to a
    directory outside the tree before its fchmod: the run fails midway in one line,
    nothing outside changes mode or name, and no place is a symlink; the next run
    refuses the symlink before any change."""
    tree = small_tree(tmp_path / "tree", FILES, kernel=False)
    outside = _outside(tmp_path)
    outside_before = _shape(outside)
    temporary = f".opt{NEW}"

    def swap(parent: int) -> None:
        os.rename(temporary, f"{temporary}.moved", src_dir_fd=parent, dst_dir_fd=parent)
        os.symlink(outside, temporary, dir_fd=parent)

    swapped = after_mkdir(monkeypatch, swap, NEW_OPT)
    with pytest.raises(TreeLayoutError) as raised:
        sapwood.prepare_tree(tree)
    monkeypatch.undo()
    assert swapped, "the precondition: the swap happened"
    assert "\n" not in str(raised.value) and "run it again" in str(raised.value)
    assert _shape(outside) == outside_before
    assert stat.S_IMODE(os.stat(outside).st_mode) == 0o700
    assert not os.path.lexists(tree / "var/opt") and not (tree / "opt").is_symlink()
    with pytest.raises(TreeLayoutError, match="nothing was changed"):
        sapwood.prepare_tree(tree)
    assert os.readlink(tree / NEW_OPT) == str(outside)


@pytest.mark.parametrize("when", ["before its parent is opened", "after the mkdir"])
def test_the_places_parent_swapped_for_a_symlink_is_never_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """var/ moved away and a symlink to a directory outside put there while var/opt is
    being made: nothing is made, renamed or chmodded outside the tree (the parent is
    entered with O_NOFOLLOW, and what is made goes through its descriptor)."""
    tree = small_tree(tmp_path / "tree", FILES, kernel=False)
    outside = _outside(tmp_path)
    outside_before = _shape(outside)

    swapped: list[str] = []

    def swap(_parent: int = -1) -> None:
        os.rename(tree / "var", tmp_path / "var.moved")
        (tree / "var").symlink_to(outside)
        swapped.append("var")

    if when == "after the mkdir":
        after_mkdir(monkeypatch, swap, NEW_OPT)
    else:  # var/opt's parent entered (each component made where missing)
        real = nofollow.make_dirs_below

        def make_dirs_below(root: int, relative: str, mode: int = 0o755) -> int:
            if relative == "var" and not swapped:
                swap()
            return real(root, relative, mode)

        monkeypatch.setattr(prepare_tree_module, "make_dirs_below", make_dirs_below)
    try:
        sapwood.prepare_tree(tree)
    except TreeLayoutError as exc:
        assert "\n" not in str(exc)  # a failure is fine; a change outside is not
    monkeypatch.undo()
    assert swapped, "the precondition: the swap happened"
    assert _shape(outside) == outside_before
    assert stat.S_IMODE(os.stat(outside).st_mode) == 0o700


def test_a_directory_made_at_the_place_meanwhile_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty directory of the user's (0700) made at var/opt between the plan and the
    rename (a rename would replace it): the run fails midway in one line, that
    directory keeps its inode and mode, the temporary name is gone; the next run links
    it and leaves its mode as it is (a users' directory's)."""
    tree = small_tree(tmp_path / "tree", FILES, kernel=False)
    made = after_mkdir(monkeypatch, lambda parent: os.mkdir("opt", 0o700, dir_fd=parent), NEW_OPT)
    with pytest.raises(TreeLayoutError) as raised:
        sapwood.prepare_tree(tree)
    monkeypatch.undo()
    assert made, "the precondition: the directory was made meanwhile"
    assert "File exists" in str(raised.value) and "\n" not in str(raised.value)
    users = os.lstat(tree / "var/opt")
    assert not os.path.lexists(tree / NEW_OPT)
    sapwood.prepare_tree(tree)
    assert os.readlink(tree / "opt") == "var/opt"
    after = os.lstat(tree / "var/opt")
    assert (after.st_ino, stat.S_IMODE(after.st_mode)) == (users.st_ino, 0o700)


def test_a_full_disk_at_the_rename_leaves_the_tree_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No room for the rename's new name (ENOSPC: a directory block on ext4) in a tree
    without var/: the run fails in one line naming nothing done, the temporary
    directory and var/ (made on the way) are removed: the tree is as it was; with room
    the next run makes every place with its mode."""
    tree = small_tree(tmp_path / "tree", {}, kernel=False)
    for name in ("var/lib/state", "var/lib", "var"):
        path = tree / name
        path.rmdir() if path.is_dir() else path.unlink()
    before = _shape(tree)
    real = nofollow.rename_noreplace  # make_dir's rename (renameat2)

    def rename(parent: int, src: str, dst: str) -> None:
        if src.endswith(NEW):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), src, dst)
        real(parent, src, dst)

    monkeypatch.setattr(nofollow, "rename_noreplace", rename)
    with pytest.raises(OutOfSpaceError) as raised:
        sapwood.prepare_tree(tree)
    monkeypatch.undo()
    assert "done before it: nothing" in str(raised.value), str(raised.value)
    assert _shape(tree) == before
    sapwood.prepare_tree(tree)
    for place in ("var/home", "var/opt", "var/srv", "var/mnt", "var/usrlocal"):
        assert stat.S_IMODE(os.lstat(tree / place).st_mode) == 0o755, place
    assert stat.S_IMODE(os.lstat(tree / "var/roothome").st_mode) == 0o700
    assert not [path for path in tree.rglob(f"*{NEW}")]
