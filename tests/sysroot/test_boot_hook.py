"""``sapwood admin install-initramfs-hook TREE``: what it writes, what it refuses.

A fake tree with the two files of initramfs-tools the command looks for stands in
for Debian's (tests/sysroot/test_boot.py installs into a real one and boots it).
"""

from __future__ import annotations

import stat
import subprocess
from importlib.resources import files
from pathlib import Path

import pytest

import sapwood
from tests.helpers import run

HOOK = "usr/share/initramfs-tools/hooks/sapwood"
SCRIPT = "usr/share/initramfs-tools/scripts/local-bottom/sapwood"
SHIPPED = files("fs.sysroot").joinpath("initramfs-tools")


def fake_tree(root: Path, *, tools: bool = True, mount: bool = True) -> Path:
    """A tree with (or without) initramfs-tools' hook-functions and init, and
    util-linux mount; merged /usr as Debian's (bin -> usr/bin)."""
    (root / "usr/bin").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    if tools:
        (root / "usr/share/initramfs-tools/hooks").mkdir(parents=True)
        (root / "usr/share/initramfs-tools/hook-functions").write_text("# functions\n")
        (root / "usr/share/initramfs-tools/init").write_text("#!/bin/sh\n")
    if mount:
        (root / "usr/bin/mount").write_bytes(b"\x7fELF")
    return root


def snapshot(root: Path) -> list[tuple[str, int, bytes]]:
    """Every path under root with its mode and (for files) content."""
    found = []
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        data = path.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        found.append((str(path.relative_to(root)), st.st_mode, data))
    return found


def test_installs_the_hook_and_script_executable(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path / "tree")
    result = run("admin", "install-initramfs-hook", tree, text=True, check=True)
    assert result.stdout.splitlines() == [f"installed {tree / HOOK}", f"installed {tree / SCRIPT}"]
    for relative, shipped in ((HOOK, "hooks/sapwood"), (SCRIPT, "scripts/local-bottom/sapwood")):
        installed = tree / relative
        assert installed.read_bytes() == SHIPPED.joinpath(shipped).read_bytes()
        assert stat.S_IMODE(installed.stat().st_mode) == 0o755
    assert (tree / "sysroot").is_dir()  # the initramfs moves the physical root here
    assert not list(tree.rglob("*.sapwood-tmp"))


def test_a_second_install_replaces_the_first(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path / "tree")
    (tree / SCRIPT).parent.mkdir(parents=True)
    (tree / SCRIPT).write_text("old\n")
    (tree / SCRIPT).chmod(0o600)
    paths = sapwood.install_initramfs_hook(str(tree))
    assert paths == [tree / HOOK, tree / SCRIPT]
    assert (tree / SCRIPT).read_bytes().startswith(b"#!/bin/sh\n")
    assert stat.S_IMODE((tree / SCRIPT).stat().st_mode) == 0o755
    before = snapshot(tree)
    sapwood.install_initramfs_hook(tree)
    assert snapshot(tree) == before


@pytest.mark.parametrize(
    ("kind", "missing"),
    [
        ("no initramfs-tools", "usr/share/initramfs-tools/hook-functions"),
        ("no mount", "usr/bin/mount"),
    ],
)
def test_a_tree_without_what_the_hook_needs_is_refused(
    tmp_path: Path, kind: str, missing: str
) -> None:
    tree = fake_tree(
        tmp_path / "tree", tools=kind != "no initramfs-tools", mount=kind != "no mount"
    )
    before = snapshot(tree)
    result = run("admin", "install-initramfs-hook", tree, text=True)
    assert result.returncode == 1
    assert result.stdout == ""
    assert (
        result.stderr
        == f"sapwood: error: {tree}: no {missing} in the tree (install initramfs-tools and mount)\n"
    )
    assert snapshot(tree) == before
    with pytest.raises(sapwood.InitramfsTreeError) as caught:
        sapwood.install_initramfs_hook(tree)
    assert (caught.value.tree, caught.value.missing) == (str(tree), missing)


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_tree_that_is_not_a_directory_is_refused(tmp_path: Path, kind: str) -> None:
    tree = tmp_path / "tree"
    if kind == "file":
        tree.write_text("not a tree\n")
    result = run("admin", "install-initramfs-hook", tree, text=True)
    assert result.returncode == 1
    assert result.stderr == f"sapwood: error: {tree}: not a directory\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if kind == "missing" else ["tree"])


def test_an_absolute_bin_symlink_is_not_followed_to_the_host(tmp_path: Path) -> None:
    """A tree whose bin -> /usr/bin (absolute) has no mount of its own: the host's
    /usr/bin/mount must not count."""
    tree = fake_tree(tmp_path / "tree", mount=False)
    (tree / "bin").unlink()
    (tree / "bin").symlink_to("/usr/bin")
    with pytest.raises(sapwood.InitramfsTreeError) as caught:
        sapwood.install_initramfs_hook(tree)
    assert caught.value.missing == "usr/bin/mount"


def test_a_symlinked_directory_in_the_tree_is_not_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    tree = fake_tree(tmp_path / "tree")
    (tree / "usr/share/initramfs-tools/hooks").rmdir()
    (tree / "usr/share/initramfs-tools/hooks").symlink_to(outside)
    with pytest.raises(sapwood.InitramfsTreeError) as caught:
        sapwood.install_initramfs_hook(tree)
    assert caught.value.missing == "usr/share/initramfs-tools/hooks"
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("name", ["hooks/sapwood", "scripts/local-bottom/sapwood"])
def test_the_shipped_scripts_are_posix_shell(name: str) -> None:
    """dash (Debian's /bin/sh, the same parser as klibc's sh) reads them, and they
    answer initramfs-tools' 'prereqs' question with nothing, touching nothing."""
    path = str(SHIPPED.joinpath(name))
    subprocess.run(["dash", "-n", path], check=True)
    result = subprocess.run(["dash", path, "prereqs"], capture_output=True, text=True, check=True)
    assert result.stdout == "\n"


def test_a_symlink_or_leftover_at_the_temporary_name_is_replaced_not_written_through(
    tmp_path: Path,
) -> None:
    """What a tree holds at the temporary names (a symlink out of the tree, a leftover
    of a killed install) is unlinked, never opened: the outside file keeps its bytes."""
    outside = tmp_path / "outside"
    outside.write_bytes(b"host secret\n")
    tree = fake_tree(tmp_path / "tree")
    (tree / "usr/share/initramfs-tools/hooks/.sapwood.sapwood-tmp").symlink_to(outside)
    (tree / SCRIPT).parent.mkdir(parents=True)
    (tree / SCRIPT).parent.joinpath(".sapwood.sapwood-tmp").write_bytes(b"half written")
    sapwood.install_initramfs_hook(tree)
    assert outside.read_bytes() == b"host secret\n"
    assert (tree / HOOK).read_bytes() == SHIPPED.joinpath("hooks/sapwood").read_bytes()
    assert (tree / SCRIPT).read_bytes().startswith(b"#!/bin/sh\n")
    assert not list(tree.rglob("*.sapwood-tmp"))


def test_a_directory_at_the_temporary_name_is_one_error_line(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path / "tree")
    (tree / "usr/share/initramfs-tools/hooks/.sapwood.sapwood-tmp/inner").mkdir(parents=True)
    result = run("admin", "install-initramfs-hook", tree, text=True)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and ".sapwood.sapwood-tmp" in result.stderr
    assert not (tree / HOOK).exists()
