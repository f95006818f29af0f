"""A bootable Debian tree for the boot test: debootstrap with a kernel, cached.

debootstrap minbase plus linux-image-amd64, initramfs-tools, kmod and udev (about
1 min 20 s and 750 MB, once per machine) into /var/cache/sapwood-tests, device
nodes removed as tests/debian.py does (a commit refuses them; the initramfs brings
devtmpfs). sapwood's initramfs hook is installed into it by the test (the command
under test), and the initramfs rebuilt in a chroot only when the hook or the
boot script changed since the last build (a stamp beside the tree).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from tests.debian import CACHE, MIRROR, SUITE

BOOT_PACKAGES = "linux-image-amd64,initramfs-tools,kmod,udev"
INITRAMFS_FILES = (
    "usr/share/initramfs-tools/hooks/sapwood",
    "usr/share/initramfs-tools/scripts/local-bottom/sapwood",
)


def boot_tree() -> Path:
    """The path of the cached bootable tree, built on first use (needs root)."""
    tree = CACHE / f"debian-{SUITE}-boot"
    if (tree / "etc" / "debian_version").is_file() and list((tree / "boot").glob("vmlinuz-*")):
        return tree
    CACHE.mkdir(parents=True, exist_ok=True)
    building = CACHE / f".building-boot-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={BOOT_PACKAGES}",
            SUITE,
            str(building),
            MIRROR,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    specials = ["(", "-type", "c", "-o", "-type", "b", "-o", "-type", "p", "-o", "-type", "s", ")"]
    subprocess.run(["find", str(building), "-xdev", *specials, "-delete"], check=True)
    os.rename(building, tree)
    return tree


def _hook_digest(tree: Path) -> str:
    digest = hashlib.sha256()
    for relative in INITRAMFS_FILES:
        digest.update((tree / relative).read_bytes())
    return digest.hexdigest()


def update_initramfs(tree: Path) -> bool:
    """Rebuild the tree's initramfs in a chroot unless it already holds the installed
    hook and script; True when it was rebuilt (20-30 s of CPU)."""
    stamp = tree.with_name(tree.name + ".initramfs-stamp")
    digest = _hook_digest(tree)
    if stamp.is_file() and stamp.read_text() == digest:
        return False
    proc = tree / "proc"
    subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
    try:
        subprocess.run(
            ["chroot", str(tree), "update-initramfs", "-u", "-k", "all"],
            check=True,
            capture_output=True,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"},
        )
    finally:
        subprocess.run(["umount", str(proc)], check=True)
    stamp.write_text(digest)
    return True


def initramfs_listing(tree: Path) -> str:
    """The file list of the tree's initramfs (lsinitramfs, run in the chroot)."""
    initrds = sorted((tree / "boot").glob("initrd.img-*"))
    result = subprocess.run(
        ["chroot", str(tree), "lsinitramfs", f"/boot/{initrds[-1].name}"],
        check=True,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"},
    )
    return result.stdout
