"""review26: install-initramfs-hook's directories made under a temporary name (c8924c3)
attacked: a kill before each step, a symlink swapped in at the temporary, directories and
leftovers in the way, a full disk. See /work/plan/review26.md for the findings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import sapwood
from tests.helpers import IS_ROOT, NOBODY, ROOT, fill_inodes, run, small_tmpfs
from tests.sysroot.test_boot_hook import HOOK, SCRIPT, fake_tree, snapshot

TOOLS = "usr/share/initramfs-tools"

# A child that runs install_initramfs_hook under ``umask`` and SIGKILLs itself just before
# the ``kill_at``-th call of one of CALLS (0: never); it prints how many calls it made.
CALLS = ("mkdir", "fchmod", "rename", "replace", "unlink", "rmdir", "fsync")
CHILD = """
import os, signal, sys
tree, kill_at, umask = sys.argv[1], int(sys.argv[2]), int(sys.argv[3], 8)
made = [0]
def counted(real):
    def call(*args, **kwargs):
        made[0] += 1
        if made[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call
for name in CALLS:
    setattr(os, name, counted(getattr(os, name)))
os.umask(umask)
import sapwood
sapwood.install_initramfs_hook(tree)
print(made[0])
"""


def _child(tree: Path, kill_at: int, umask: str) -> subprocess.CompletedProcess[str]:
    code = f"CALLS = {CALLS!r}\n{CHILD}"
    argv = [sys.executable, "-c", code, str(tree), str(kill_at), umask]
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=60)


def _leftovers(tree: Path) -> list[str]:
    return sorted(str(p.relative_to(tree)) for p in tree.rglob(".*.sapwood-*"))


@pytest.mark.parametrize("umask", ["077", "022"])
def test_a_kill_before_any_step_then_a_run_gives_a_clean_install(
    tmp_path: Path, umask: str
) -> None:
    """SIGKILL before each mkdir, fchmod, rename, replace, unlink, rmdir, fsync of a run
    (/sysroot, scripts/ and local-bottom/ all missing); the next run succeeds and the tree
    is a clean install's (every mode as made there, 0755 directories, nothing left at a
    temporary name). Checked by hand too with os.open counted: 56 points, all clean."""
    clean = fake_tree(tmp_path / "clean")
    counted = _child(clean, 0, umask)
    assert counted.returncode == 0, counted.stderr
    calls = int(counted.stdout)
    assert calls >= 9  # 3 directories made (mkdir, fchmod, rename) at least
    want = snapshot(clean)
    killed_with_leftover = 0
    for kill_at in range(1, calls + 1):
        tree = fake_tree(tmp_path / f"t{kill_at}")
        killed = _child(tree, kill_at, umask)
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr)
        killed_with_leftover += bool(_leftovers(tree))
        again = _child(tree, 0, umask)
        assert again.returncode == 0, (kill_at, again.stderr)
        assert snapshot(tree) == want, kill_at
    assert killed_with_leftover > 0  # some kills did leave a temporary for the run to clear


@pytest.fixture
def swap_in_a_symlink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every directory made at a temporary name is replaced by a symlink to ``outside``
    right after its mkdir (a racing writer in the tree)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    real_mkdir: Callable[..., None] = os.mkdir

    def mkdir(path: str, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        real_mkdir(path, mode, dir_fd=dir_fd)
        if str(path).endswith(".sapwood-new"):
            os.rmdir(path, dir_fd=dir_fd)
            os.symlink(outside, path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "mkdir", mkdir)
    yield outside


def test_a_symlink_swapped_in_at_the_temporary_is_never_followed(
    tmp_path: Path, swap_in_a_symlink: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = fake_tree(tmp_path / "tree")
    with pytest.raises(sapwood.InitramfsTreeError) as caught:
        sapwood.install_initramfs_hook(tree)
    assert "\n" not in str(caught.value)
    assert os.listdir(swap_in_a_symlink) == []
    assert not (tree / SCRIPT).exists() and not (tree / "sysroot").exists()
    monkeypatch.undo()
    # the next run refuses the symlink left at the temporary name: it is not sapwood's
    with pytest.raises(sapwood.InitramfsTreeError, match=r"\.scripts\.sapwood-new"):
        sapwood.install_initramfs_hook(tree)
    assert os.listdir(swap_in_a_symlink) == []


def test_a_file_at_a_deeper_temporary_is_refused_before_any_write(tmp_path: Path) -> None:
    """scripts/ there, local-bottom/ missing, a file at its temporary name."""
    tree = fake_tree(tmp_path / "tree")
    (tree / TOOLS / "scripts").mkdir()
    (tree / TOOLS / "scripts/.local-bottom.sapwood-new").write_text("mine\n")
    before = snapshot(tree)
    result = run("admin", "install-initramfs-hook", tree, text=True)
    assert result.returncode != 0 and result.stderr.count("\n") == 1, result.stderr
    assert ".local-bottom.sapwood-new is in the way" in result.stderr
    assert snapshot(tree) == before


def test_a_directory_at_the_scripts_temporary_is_refused_before_any_write(
    tmp_path: Path,
) -> None:
    """review26 1 (fixed in 8d74ad9): hooks/sapwood was written, then the script's
    temporary refused, at every run."""
    tree = fake_tree(tmp_path / "tree")
    (tree / TOOLS / "scripts/local-bottom/.sapwood.sapwood-tmp").mkdir(parents=True)
    before = snapshot(tree)
    result = run("admin", "install-initramfs-hook", tree, text=True)
    assert result.returncode != 0 and result.stderr.count("\n") == 1, result.stderr
    assert ".sapwood.sapwood-tmp is in the way" in result.stderr
    assert not (tree / HOOK).exists()
    assert snapshot(tree) == before


def test_a_refusal_leaves_an_earlier_empty_leftover_where_it_was(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path / "tree")
    (tree / TOOLS / ".scripts.sapwood-new").mkdir()  # a killed run's
    (tree / ".sysroot.sapwood-new").write_text("mine\n")  # not sapwood's: refused
    before = snapshot(tree)
    result = run("admin", "install-initramfs-hook", tree, text=True)
    assert result.returncode != 0 and ".sysroot.sapwood-new" in result.stderr
    assert snapshot(tree) == before


@pytest.mark.skipif(not IS_ROOT, reason="chown to another user needs root")
def test_another_users_empty_directory_at_a_temporary_name_is_kept(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path / "tree")
    theirs = tree / ".sysroot.sapwood-new"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    before = snapshot(tree)
    result = run("admin", "install-initramfs-hook", tree, text=True)
    assert result.returncode != 0 and ".sysroot.sapwood-new" in result.stderr, result.stderr
    assert theirs.lstat().st_uid == NOBODY
    assert snapshot(tree) == before


@pytest.mark.skipif(not IS_ROOT, reason="mounting a small tmpfs needs root")
@pytest.mark.parametrize("left", [0, 1, 2, 4])
def test_no_inode_left_leaves_nothing_behind_and_a_next_run_finishes(
    tmp_path: Path, left: int
) -> None:
    """Inodes for ``left`` new entries: the run stops at the one that needs one more, in
    one line, with nothing at a temporary name; a next run with room installs all."""
    clean = fake_tree(tmp_path / "clean")
    sapwood.install_initramfs_hook(clean)
    with small_tmpfs(tmp_path / "disk", "1m,nr_inodes=400") as disk:
        tree = fake_tree(disk / "tree")
        fillers = fill_inodes(disk, left)
        try:
            result = run("admin", "install-initramfs-hook", tree, text=True)
        finally:
            for name in os.listdir(fillers):
                (fillers / name).unlink()
            fillers.rmdir()
        assert result.returncode != 0 and result.stderr.count("\n") == 1, result.stderr
        assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
        assert _leftovers(tree) == []
        sapwood.install_initramfs_hook(tree)
        assert snapshot(tree) == snapshot(clean)


@pytest.mark.skipif(not IS_ROOT, reason="mounting a small tmpfs needs root")
@pytest.mark.parametrize("left", [1, 4])
def test_a_full_disk_is_an_out_of_space_error_naming_the_tree(tmp_path: Path, left: int) -> None:
    with small_tmpfs(tmp_path / "disk", "1m,nr_inodes=400") as disk:
        tree = fake_tree(disk / "tree")
        fillers = fill_inodes(disk, left)
        try:
            with pytest.raises(sapwood.OutOfSpaceError) as caught:
                sapwood.install_initramfs_hook(tree)
        finally:
            for name in os.listdir(fillers):
                (fillers / name).unlink()
            fillers.rmdir()
        message = str(caught.value)
        assert str(tree) in message and "\n" not in message, message
