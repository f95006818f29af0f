"""The directories install-initramfs-hook makes (scripts/local-bottom, /sysroot) get
0755 whatever the umask, and only under their name once they have it (as prepare-tree's
places since session 19: d6 left this one to the lead)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import sapwood
from tests.helpers import run
from tests.sysroot.test_boot_hook import HOOK, SCRIPT, fake_tree, snapshot


@pytest.fixture
def umask_077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.usefixtures("umask_077")
def test_the_directories_made_are_0755_under_umask_077(tmp_path: Path) -> None:
    """Before: /sysroot and scripts/, scripts/local-bottom/ were made 0700."""
    tree = fake_tree(tmp_path / "tree")
    sapwood.install_initramfs_hook(tree)
    for relative in ("sysroot", "usr/share/initramfs-tools/scripts", Path(SCRIPT).parent):
        assert _mode(tree / relative) == 0o755, relative
    assert _mode(tree / HOOK) == 0o755
    assert not list(tree.rglob(".*.sapwood-new"))


def test_a_killed_runs_empty_temporary_is_removed(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path / "tree")
    (tree / ".sysroot.sapwood-new").mkdir(mode=0o700)  # killed before its fchmod
    sapwood.install_initramfs_hook(tree)
    assert _mode(tree / "sysroot") == 0o755
    assert not (tree / ".sysroot.sapwood-new").exists()


@pytest.mark.parametrize("kind", ["file", "symlink", "full directory"])
def test_anything_else_at_a_temporary_name_is_refused_before_any_write(
    tmp_path: Path, kind: str
) -> None:
    tree = fake_tree(tmp_path / "tree")
    in_the_way = tree / "usr/share/initramfs-tools/.scripts.sapwood-new"
    if kind == "file":
        in_the_way.write_text("mine\n")
    elif kind == "symlink":
        in_the_way.symlink_to(tmp_path)
    else:
        in_the_way.mkdir()
        (in_the_way / "kept").write_text("mine\n")
    before = snapshot(tree)
    result = run("admin", "install-initramfs-hook", tree, text=True)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and ".scripts.sapwood-new" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(tree) == before


@pytest.mark.parametrize("target", [HOOK, SCRIPT])
def test_a_directory_at_a_files_temporary_name_is_refused_before_any_write(
    tmp_path: Path, target: str
) -> None:
    """review26 1: one at the script's: the hook was written, then the script refused,
    at every run."""
    tree = fake_tree(tmp_path / "tree")
    directory, name = target.rsplit("/", 1)
    (tree / directory / f".{name}.sapwood-tmp").mkdir(parents=True)
    before = snapshot(tree)
    result = run("admin", "install-initramfs-hook", tree, text=True)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and f".{name}.sapwood-tmp" in result.stderr
    assert snapshot(tree) == before
