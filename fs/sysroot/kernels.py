"""Finding a deployment's kernel and installing it in boot/sapwood/OS-BOOTCSUM/.

Two places are looked at, OSTree's first: ``usr/lib/modules/KVER/vmlinuz`` with
``initramfs.img`` beside it, then Debian's ``boot/vmlinuz-KVER`` with
``boot/initrd.img-KVER``; the highest KVER wins when there are several. BOOTCSUM is
the blake3 of the kernel's and initramfs's names and bytes (framed: see
boot_checksum), so deployments sharing a kernel and initramfs share one directory.
The directory is built under a temporary name and renamed into place: one that
exists is complete. Files are hardlinked from the deployment where the filesystem
allows, else copied.

The tree is the commit author's: no path is looked at through a symlink of the tree
(``usr -> /usr`` or ``modules/KVER -> /boot`` would name the running system's files,
``initramfs.img -> /etc/shadow`` would be read and linked into boot/), and a KVER
that is not a plain file name is refused, since it becomes a line of the BLS entry
(a newline would add lines of the tree's choosing, ``options init=...``).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import blake3

from fs.sysroot.copying import copy_entry
from fs.sysroot.durable import fsync_path
from fs.sysroot.layout import Layout
from fs.sysroot.removal import remove_own_tree
from fs.sysroot.state import SAFE_NAME, BootFiles
from store import TreeLayoutError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kernel:
    version: str
    kernel: Path
    initramfs: Path | None


def _version_key(version: str) -> list[tuple[int, str]]:
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.\-+~]", version)]


def find_kernel(tree: Path) -> Kernel | None:
    """The kernel of a checked-out tree, or None when it has none. Raises
    TreeLayoutError for a kernel whose version is not a plain file name."""
    found: list[Kernel] = []
    if _real(tree, "usr/lib/modules", stat.S_ISDIR):
        for entry in sorted(os.listdir(tree / "usr/lib/modules")):
            kver = f"usr/lib/modules/{entry}"
            if _real(tree, f"{kver}/vmlinuz", stat.S_ISREG):
                found.append(_kernel(tree, entry, f"{kver}/vmlinuz", f"{kver}/initramfs.img"))
    if not found and _real(tree, "boot", stat.S_ISDIR):
        for name in sorted(os.listdir(tree / "boot")):
            if name.startswith("vmlinuz-") and _real(tree, f"boot/{name}", stat.S_ISREG):
                version = name.removeprefix("vmlinuz-")
                found.append(_kernel(tree, version, f"boot/{name}", f"boot/initrd.img-{version}"))
    if not found:
        return None
    return max(found, key=lambda k: _version_key(k.version))


def _kernel(tree: Path, version: str, image: str, initramfs: str) -> Kernel:
    if not SAFE_NAME.fullmatch(version):
        raise TreeLayoutError(
            f"the commit's kernel {image!r}: its version is not a plain file name "
            "(letters, digits, '.', '_', '+', '~', '-'); nothing was deployed",
            path=f"/{image}",
        )
    found = tree / initramfs if _real(tree, initramfs, stat.S_ISREG) else None
    return Kernel(version, tree / image, found)


def _real(tree: Path, relative: str, kind: Callable[[int], bool]) -> bool:
    """``tree/relative`` exists, is of ``kind``, and no component of it is a symlink."""
    path = tree
    for part in relative.split("/"):
        path = path / part
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        if stat.S_ISLNK(st.st_mode):
            return False
    return kind(st.st_mode)


def boot_checksum(kernel: Kernel) -> str:
    """BOOTCSUM: the blake3 of each file framed by its name in boot/sapwood/ and its
    length (an absent initramfs framed as such), so that two kernels share a
    directory only when it holds the very files, under the very names, that both
    entries name (bytes alone would let "KERNEL"+"INITRD" and "KERNELINIT"+"RD", or
    one kernel under two versions, or no initramfs and an empty one, share it)."""
    linux, initrd = _file_names(kernel)
    digest = blake3.blake3()
    for name, path in ((linux, kernel.kernel), (initrd, kernel.initramfs)):
        if name is None or path is None:
            digest.update(b"-\0")
            continue
        with open(path, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            digest.update(f"{name}\0{size}\0".encode())
            done = 0
            while done < size and (chunk := source.read(min(1 << 20, size - done))):
                digest.update(chunk)
                done += len(chunk)
            if done != size:  # changed while read: the deployment is the commit's
                raise TreeLayoutError(f"{path}: changed while read", path=str(path))
    return digest.hexdigest()


def _file_names(kernel: Kernel) -> tuple[str, str | None]:
    """The kernel's and initramfs's file names in boot/sapwood/OS-BOOTCSUM/."""
    initrd = f"initramfs-{kernel.version}.img" if kernel.initramfs else None
    return f"vmlinuz-{kernel.version}", initrd


def install_kernel(layout: Layout, os_name: str, kernel: Kernel) -> BootFiles:
    """Put ``kernel`` into boot/sapwood/OS-BOOTCSUM/ (once) and say where it is."""
    dir_name = f"{os_name}-{boot_checksum(kernel)}"
    linux, initrd = _file_names(kernel)
    target = layout.boot_files / dir_name
    if not target.is_dir():
        layout.boot_files.mkdir(mode=0o755, exist_ok=True)
        building = layout.boot_files / f".{dir_name}.{uuid.uuid4().hex[:8]}"
        building.mkdir(mode=0o755)
        try:
            _link_or_copy(kernel.kernel, building / linux)
            if kernel.initramfs is not None and initrd is not None:
                _link_or_copy(kernel.initramfs, building / initrd)
            for name in os.listdir(building):
                fsync_path(building / name)
            fsync_path(building)
            os.rename(building, target)
        except BaseException:
            remove_own_tree(building)
            raise
    return BootFiles(dir=dir_name, kernel_version=kernel.version, linux=linux, initrd=initrd)


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        copy_entry(source, dest)


def leftovers(layout: Layout, used: set[str]) -> list[Path]:
    """Directories of boot/sapwood/ that no deployment uses (partial ones too)."""
    if not layout.boot_files.is_dir():
        return []
    return sorted(p for p in layout.boot_files.iterdir() if p.name not in used)
