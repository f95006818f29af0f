"""Review 24 (session 18): hostile review of prepare-tree's set-aside place and undo
(098680a, c8835a0, 2841a98), its plan linking a place without its link (05a2f20) and
its snippet's O_EXCL write. A passing test is a defence that holds; a strict xfail
naming "review24 N" is a defect written up in /work/plan/review24.md."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

import pytest

import sapwood
from fs.sysroot import nofollow
from fs.sysroot import prepare_tree as prepare_tree_module
from store import OutOfSpaceError, TreeLayoutError
from tests.helpers import IS_ROOT, fill_inodes, small_tmpfs
from tests.sysroot.conftest import tree_shape as _shape

# a tree not laid out yet: home and root move first, then opt onto an empty var/opt
# (Debian's base-files has one), whose set-aside name is var/.opt.sapwood-aside
_TREE = {
    "home/alice/notes": "mine\n",
    "root/.profile": "# root\n",
    "opt/app/f": "app\n",
    "var/opt": None,
    "usr/bin/sh": "#!\n",
}
ASIDE = "var/.opt.sapwood-aside"


def _tree(at: Path) -> Path:
    for relative, text in _TREE.items():
        path = at / relative
        if text is None:
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return at


def _hold_aside(tree: Path, what: str, outside: Path) -> None:
    aside = tree / ASIDE
    if what == "a file":
        aside.write_text("the user's\n")
    elif what == "a symlink":
        outside.mkdir()
        (outside / "keep").write_text("outside\n")
        aside.symlink_to(outside)
    else:  # a directory with the user's files
        aside.mkdir()
        (aside / "keep").write_text("the user's\n")


HOLDERS = ["a file", "a symlink", "a directory with files"]


@pytest.mark.parametrize("what", HOLDERS)
def test_what_holds_the_aside_name_is_never_removed_moved_nor_followed(
    tmp_path: Path, what: str
) -> None:
    """Something of the user's at the set-aside name (not sapwood's empty place): the
    run that cannot set the place aside and the run after it leave it as it was, and
    a symlink there is never followed (its target's files stay)."""
    tree = _tree(tmp_path / "tree")
    _hold_aside(tree, what, tmp_path / "outside")
    aside = tree / ASIDE
    before = os.lstat(aside)
    for _ in range(2):
        with pytest.raises(TreeLayoutError):
            sapwood.prepare_tree(tree)
    after = os.lstat(aside)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    if what == "a file":
        assert aside.read_text() == "the user's\n"
    elif what == "a symlink":
        assert os.readlink(aside) == str(tmp_path / "outside")
        assert os.listdir(tmp_path / "outside") == ["keep"]
    else:
        assert os.listdir(aside) == ["keep"]
    # what the failed step moved is back: /opt still the user's directory, var/opt empty
    assert (tree / "opt/app/f").read_text() == "app\n"
    assert not (tree / "opt").is_symlink()
    assert os.listdir(tree / "var/opt") == []


@pytest.mark.parametrize("what", HOLDERS)
def test_what_holds_the_aside_name_is_refused_before_any_change(tmp_path: Path, what: str) -> None:
    """review24 1, fixed in 34c34ae (was a strict xfail).
    Before: the plan can see the set-aside name taken (a file, a symlink, a
    directory with files): prepare-tree fails midway instead ("Not a directory (opt)",
    "Directory not empty (opt)": /opt is a directory, the name at fault is never
    said), after moving /home and /root, and every later run fails the same way. The
    module promises a refusal that leaves the tree as it was for what a plan can see."""
    tree = _tree(tmp_path / "tree")
    _hold_aside(tree, what, tmp_path / "outside")
    before = _shape(tree)
    with pytest.raises(TreeLayoutError) as raised:
        sapwood.prepare_tree(tree)
    assert ".opt.sapwood-aside" in str(raised.value), str(raised.value)
    assert "nothing was changed" in str(raised.value), str(raised.value)
    assert _shape(tree) == before


def _writer_after_the_plan(monkeypatch: pytest.MonkeyPatch, tree: Path) -> None:
    """Another process writing into the empty var/opt just after the plan listed it
    (deterministic stand-in for the race: the listing says empty, then a file lands)."""
    real = nofollow.listdir_below  # what prepare_tree calls

    def listed_then_written(root: int, relative: str) -> list[str]:
        names = real(root, relative)
        if relative == "var/opt":
            (tree / "var/opt/written-meanwhile").write_text("the user's\n")
        return names

    monkeypatch.setattr(prepare_tree_module, "listdir_below", listed_then_written)


def test_a_file_written_into_the_place_during_the_run_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file written into the empty place between the plan and the move is set aside
    with the place and never removed (rmdir only), at this run and at the next."""
    tree = _tree(tmp_path / "tree")
    _writer_after_the_plan(monkeypatch, tree)
    sapwood.prepare_tree(tree)
    monkeypatch.undo()
    assert sapwood.prepare_tree(tree) == []
    assert (tree / ASIDE / "written-meanwhile").read_text() == "the user's\n"
    assert (tree / "var/opt/app/f").read_text() == "app\n"


def test_a_file_written_into_the_place_during_the_run_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """review24 2, fixed in 34c34ae (was a strict xfail).
    Before: that file ends in var/.opt.sapwood-aside, a hidden directory no
    line of the run names (the failed rmdir is logged at DEBUG), and every later run
    stays silent about it: the user's file is hidden for good in a sapwood name."""
    tree = _tree(tmp_path / "tree")
    _writer_after_the_plan(monkeypatch, tree)
    with caplog.at_level(logging.DEBUG, logger="fs.sysroot.prepare_tree"):
        done = sapwood.prepare_tree(tree)
    assert (tree / ASIDE / "written-meanwhile").exists()  # the precondition: it moved
    said = [*done, *(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)]
    assert any(".opt.sapwood-aside" in line for line in said), said


def test_a_second_run_changes_nothing_not_even_an_inode(tmp_path: Path) -> None:
    """Every place there already, empty (each move sets one aside and removes it): the
    run after a completed one returns nothing and leaves every entry's inode, mode and
    size as they were (no aside made and removed, no snippet rewritten)."""
    tree = _tree(tmp_path / "tree")
    for place in ("var/home", "var/roothome", "var/srv", "var/mnt", "var/usrlocal"):
        (tree / place).mkdir(parents=True)
    (tree / "usr/local/bin").mkdir(parents=True)
    (tree / "var/lib/dpkg").mkdir(parents=True)
    (tree / "var/lib/dpkg/status").write_text("Package: x\n")
    (tree / "usr/lib/sysimage/dpkg").mkdir(parents=True)
    first = sapwood.prepare_tree(tree)
    assert len(first) == 8, first  # seven moves and the snippet
    assert not [p for p in tree.rglob("*sapwood-aside*")]
    before = _shape(tree)
    assert sapwood.prepare_tree(tree) == []
    assert _shape(tree) == before


def _swapped_before_chmod(monkeypatch: pytest.MonkeyPatch, name: str, outside: Path) -> None:
    """Another process (with write access to the tree) replacing ``name`` with a symlink
    to ``outside`` just before prepare-tree's chmod of it (the race made deterministic)."""
    real = os.chmod

    def swapped(path: object, mode: int, *, dir_fd: int | None = None, **kw: object) -> None:
        if path == name and dir_fd is not None:
            os.rename(name, f"{name}.moved", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.symlink(outside, name, dir_fd=dir_fd)
        real(path, mode, dir_fd=dir_fd, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "chmod", swapped)


@pytest.mark.parametrize(
    ("name", "outside_kind"),
    [(".sapwood-var.conf.sapwood-new", "file"), ("srv", "directory")],
)
def test_a_chmod_never_follows_a_symlink_swapped_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, outside_kind: str
) -> None:
    """review24 3, fixed in 34c34ae (was a strict xfail).
    Before: the snippet's temporary file (made with O_EXCL|O_NOFOLLOW) and a
    made place (mkdir) are chmod'ed by name afterwards, following a symlink: one
    swapped in between makes root chmod a file or directory outside the tree (0644,
    0755). fchmod of the descriptor never leaves the tree."""
    tree = _tree(tmp_path / "tree")
    outside = tmp_path / "outside"
    if outside_kind == "file":
        outside.write_text("secret\n")
    else:
        outside.mkdir()
    os.chmod(outside, 0o600)
    _swapped_before_chmod(monkeypatch, name, outside)
    with contextlib.suppress(TreeLayoutError):  # a failure is fine, a chmod outside is not
        sapwood.prepare_tree(tree)
    monkeypatch.undo()
    assert os.stat(outside).st_mode & 0o777 == 0o600


@pytest.mark.skipif(not IS_ROOT, reason="mounts a tmpfs")
def test_a_snippet_that_cannot_be_written_leaves_no_directory_it_made(tmp_path: Path) -> None:
    """review24 5, fixed in 34c34ae (was a strict xfail).
    Before: every link there, the snippet's directories missing (no usr/lib), two
    inodes left: usr/lib and usr/lib/tmpfiles.d are made, the snippet's file is not
    (ENOSPC). The failure's line says "done before it: nothing", its temporary file is
    removed, but the two directories made on its way stay: review23 8's rule (what a
    failure made on its way goes) holds for the steps, not for the snippet."""
    with small_tmpfs(tmp_path / "disk", "4m,nr_inodes=400") as disk:
        tree = _tree(disk / "tree")
        sapwood.prepare_tree(tree)
        shutil.rmtree(tree / "usr/lib")
        before = _shape(tree)
        fillers = fill_inodes(disk, 2)
        try:
            with pytest.raises(OutOfSpaceError) as raised:
                sapwood.prepare_tree(tree)
        finally:
            shutil.rmtree(fillers)
        assert "done before it: nothing" in str(raised.value), str(raised.value)
        assert _shape(tree) == before, "directories made for the snippet were left"


@pytest.mark.parametrize(
    ("listed", "on_disk", "expected"),
    [
        ([0, 1], [999_999_999], 2),  # past nine digits: the lowest free, not 10**9
        ([999_999_999, 0, 2], [1, 5], 3),  # gaps: the lowest none has, listed or on disk
        ([], [999_999_999], 0),
        ([3, 999_999_999], [], 0),
        ([0, 1], [2], 3),  # below nine digits: one past the highest, as always
    ],
)
def test_the_next_serial_is_free_and_never_past_nine_digits(
    monkeypatch: pytest.MonkeyPatch, listed: list[int], on_disk: list[int], expected: int
) -> None:
    """deploy._next_deployment (05a2f20): one past the highest serial of the commit, or
    past nine digits the lowest that no listed or kept deployment of it has (another
    OS's of the same commit included; another commit's serials do not count)."""
    from fs.sysroot import deploy
    from fs.sysroot.state import Deployment, parse_deployment_name

    commit, other = "a" * 64, "b" * 64
    mine = [Deployment(os_name="os", commit=commit, serial=s) for s in listed]
    theirs = [Deployment(os_name="os", commit=other, serial=s) for s in range(4)]
    kept = [Deployment(os_name="other-os", commit=commit, serial=s) for s in on_disk]
    monkeypatch.setattr(deploy, "unlisted_on_disk", lambda layout, deployments: kept)
    request = deploy.DeployRequest("os", "main", bytes.fromhex(commit))  # type: ignore[arg-type]
    new = deploy._next_deployment(None, request, [], [*mine, *theirs])  # type: ignore[arg-type]
    assert new.serial == expected
    assert new.serial not in {*listed, *on_disk}
    assert parse_deployment_name(new.name) == (commit, expected)


def test_a_kept_aside_is_not_said_as_written_during_every_later_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """review24 6, fixed in a4b5f2f (was a strict xfail).
    Before: the aside kept by review24 2's fix is warned of again at every later
    run (_remove_asides), each time as "files were written there during the run", while
    that run wrote nothing and returns [] ("laid out already; nothing changed"), and
    without the tree's path (every other line of a run names it)."""
    tree = _tree(tmp_path / "tree")
    _writer_after_the_plan(monkeypatch, tree)
    sapwood.prepare_tree(tree)
    monkeypatch.undo()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fs.sysroot.prepare_tree"):
        assert sapwood.prepare_tree(tree) == []
    said = [r.getMessage() for r in caplog.records if ".opt.sapwood-aside" in r.getMessage()]
    assert said, "the kept aside is not said at all"  # the fix's warning: present
    assert all("during the run" not in line for line in said), said
    assert all(str(tree) in line for line in said), said


@pytest.mark.parametrize(
    "component", ["var", "var/lib", "usr", "usr/lib", "usr/lib/sysimage", "usr/lib/tmpfiles.d"]
)
def test_a_symlinked_directory_on_any_way_is_refused_and_never_entered(
    tmp_path: Path, component: str
) -> None:
    """Each directory prepare-tree makes or enters on its way (the places', the links',
    the snippet's) replaced by a symlink to a directory outside the tree: one line,
    nothing changed in the tree, nothing made or removed outside it."""
    tree = _tree(tmp_path / "tree")
    (tree / "var/lib/dpkg").mkdir(parents=True)
    (tree / "var/lib/dpkg/status").write_text("Package: x\n")
    (tree / "usr/lib/sysimage").mkdir(parents=True)
    (tree / "usr/lib/tmpfiles.d").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "theirs").write_text("outside\n")
    for name in ("opt", "lib", "sysimage", "dpkg", "home"):
        (outside / name).mkdir()  # what a step would find, or make, there
    moved = tmp_path / "moved"
    os.rename(tree / component, moved)
    (tree / component).symlink_to(outside)
    before, outside_before = _shape(tree), _shape(outside)
    with pytest.raises(TreeLayoutError) as raised:
        sapwood.prepare_tree(tree)
    assert "symbolic link" in str(raised.value), str(raised.value)
    assert _shape(tree) == before
    assert _shape(outside) == outside_before
