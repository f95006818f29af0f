"""fs/sysroot/removal.py: sapwood's own directories go whatever they hold (any depth,
immutable or append-only entries), never through a symlink or a mount point."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fs.sysroot.removal import remove_own_tree
from store import SysrootError
from tests.helpers import IS_ROOT, nest_dirs


def test_a_tree_deeper_than_any_path_is_removed_without_following_symlinks(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep\n")
    doomed = tmp_path / "doomed"
    doomed.mkdir()
    nest_dirs(doomed, 3000, bottom=("f", 0o444))  # 6000 bytes of path below it: more than PATH_MAX
    (doomed / "link").symlink_to(outside)
    (doomed / "ro").mkdir(mode=0o500)
    remove_own_tree(doomed)
    assert not os.path.lexists(doomed)
    assert (outside / "keep").read_text() == "keep\n"
    remove_own_tree(doomed)  # absent: nothing to do


@pytest.mark.skipif(not IS_ROOT, reason="chattr +i and mount need root")
def test_immutable_and_append_only_entries_are_removed(tmp_path: Path) -> None:
    doomed = tmp_path / "doomed"
    (doomed / "etc").mkdir(parents=True)
    (doomed / "etc/resolv.conf").write_text("nameserver 10.0.0.1\n")
    (doomed / "etc/log").mkdir()
    (doomed / "etc/log/x").write_text("x\n")
    if subprocess.run(["chattr", "+i", str(doomed / "etc/resolv.conf")]).returncode != 0:
        pytest.skip("this filesystem has no immutable flag")
    subprocess.run(["chattr", "+a", str(doomed / "etc/log")], check=True)
    subprocess.run(["chattr", "+i", str(doomed / "etc")], check=True)
    remove_own_tree(doomed)
    assert not os.path.lexists(doomed)


@pytest.mark.skipif(not IS_ROOT, reason="mount needs root")
def test_a_mount_point_inside_is_one_error_naming_it_and_is_not_entered(
    tmp_path: Path,
) -> None:
    doomed = tmp_path / "doomed"
    (doomed / "proc").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(doomed / "proc")], check=True)
    try:
        (doomed / "proc/mounted").write_text("not ours\n")
        with pytest.raises(SysrootError, match="proc: a mount point") as caught:
            remove_own_tree(doomed)
        assert "\n" not in str(caught.value)
        assert (doomed / "proc/mounted").read_text() == "not ours\n"
    finally:
        subprocess.run(["umount", str(doomed / "proc")], check=True)
    remove_own_tree(doomed)
    assert not os.path.lexists(doomed)
