"""A sysroot in a temporary directory, and Debian trees to deploy into it.

The cached debootstrap tree has no kernel: a copy of it gets small files at
boot/vmlinuz-6.1.0-test and boot/initrd.img-6.1.0-test (enough for the layout; the
boot engineer's qemu test boots a real one). Versions v2 and v3 change a few /etc
defaults and the kernel bytes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import sapwood
from fs.sysroot import nofollow
from tests.debian import debian_tree
from tests.helpers import IS_ROOT

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="a sysroot's bare repository needs root")

KVER = "6.1.0-test"


@pytest.fixture(scope="session")
def debian_v1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Debian tree with a fake kernel and initramfs (read-only for tests)."""
    tree = tmp_path_factory.mktemp("trees") / "v1"
    # A copy (206 MB), not hard links of the cache: a link made or removed changes the
    # ctime of the cache's files, which another test process of a parallel run may be
    # committing (tests/fs/test_debian.py): "changed while it was being committed".
    subprocess.run(["cp", "-a", str(debian_tree()), str(tree)], check=True)
    (tree / f"boot/vmlinuz-{KVER}").write_bytes(b"kernel v1\n")
    (tree / f"boot/initrd.img-{KVER}").write_bytes(b"initramfs v1\n")
    return tree


@pytest.fixture(scope="session")
def debian_v2(debian_v1: Path) -> Path:
    """v1 with new /etc defaults: debian_version, motd and issue changed, a new file,
    a new directory, and another kernel."""
    tree = debian_v1.parent / "v2"
    subprocess.run(["cp", "-al", str(debian_v1), str(tree)], check=True)
    for rel, text in {
        "etc/debian_version": "12.99\n",
        "etc/motd": "motd of v2\n",
        "etc/issue": "issue of v2\n",
        "etc/new-in-v2.conf": "new default\n",
        "etc/newdir/inside.conf": "inside\n",
        f"boot/vmlinuz-{KVER}": "kernel v2\n",
    }.items():
        path = tree / rel
        path.parent.mkdir(exist_ok=True)
        path.unlink(missing_ok=True)  # a hardlink of v1's: replace, never write through
        path.write_text(text)
    return tree


@pytest.fixture
def sysroot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[sapwood.Sysroot]:
    """An initialised sysroot with the OS "debian"; nothing is booted."""
    monkeypatch.setenv("SAPWOOD_CMDLINE", "quiet")
    root = sapwood.Sysroot.init_fs(tmp_path / "sysroot")
    root.os_init("debian")
    yield root


def commit(sysroot: sapwood.Sysroot, tree: Path, branch: str = "debian/main") -> str:
    """Commit ``tree`` into the sysroot's repository; the commit id in hex."""
    with sysroot.open_repository() as repo:
        return sapwood.commit(repo, branch, tree, subject=tree.name).commit_id.hex()


@pytest.fixture(params=["renameat2", "fallback"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """nofollow's renames as renameat2, then as the look and rename it falls back to
    where the C library has none."""
    if request.param == "fallback":
        monkeypatch.setattr(nofollow, "_renameat2", lambda: None)
    else:
        assert nofollow._renameat2() is not None, "glibc >= 2.28 has renameat2"
    yield str(request.param)


def after_mkdir(
    monkeypatch: pytest.MonkeyPatch, then: Callable[[int], None], name: str
) -> list[str]:
    """``then(parent)`` just after prepare-tree's mkdir of the temporary name ``name``
    (the last component counts: a race with another process made deterministic); the
    list returned holds that name once it happened."""
    real = os.mkdir
    done: list[str] = []

    def mkdir(path: str, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        real(path, mode, dir_fd=dir_fd)
        if path == os.path.basename(name) and dir_fd is not None and not done:
            done.append(path)
            then(dir_fd)

    monkeypatch.setattr(os, "mkdir", mkdir)
    return done


def tree_shape(tree: Path) -> list[tuple[str, int, int, int, str]]:
    """Every entry's name, mode, inode, size and link target (what a run may change)."""
    found = []
    for path in sorted(tree.rglob("*")):
        st = os.lstat(path)
        target = os.readlink(path) if path.is_symlink() else ""
        size = 0 if path.is_dir() else st.st_size
        found.append((str(path.relative_to(tree)), st.st_mode, st.st_ino, size, target))
    return found


def small_tree(root: Path, files: dict[str, str], kernel: bool = True) -> Path:
    """A small tree; ``files`` maps paths to contents ('->T': a symlink, '/': a dir)."""
    root.mkdir(parents=True)
    base = {"usr/bin/true": "#!/bin/sh\n", "var/lib/state": "state\n"}
    if kernel:
        base |= {f"boot/vmlinuz-{KVER}": "k\n", f"boot/initrd.img-{KVER}": "i\n"}
    for rel, content in (base | files).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == "/":
            path.mkdir(exist_ok=True)
        elif content.startswith("->"):
            path.symlink_to(content[2:])
        else:
            path.write_text(content)
    return root


def tree_state(root: Path) -> list[tuple[str, int, int, int, str]]:
    """Everything under ``root`` but the repository's insides and the lock: (path, mode,
    size, mtime, link target), to show that a refused command changed nothing."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if rel in ("sapwood/lock", "sapwood/repo/index/lock.mdb"):
                continue
            st = os.lstat(path)
            target = os.readlink(path) if path.is_symlink() else ""
            mtime = 0 if path.is_dir() else st.st_mtime_ns
            found.append((rel, st.st_mode, st.st_size if not path.is_dir() else 0, mtime, target))
    return sorted(found)


def remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
