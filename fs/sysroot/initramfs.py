"""Put sapwood's initramfs-tools hook and boot script into an OS tree.

The files ship as package data beside this module, in the layout initramfs-tools
reads (``initramfs-tools/hooks/sapwood``, ``initramfs-tools/scripts/local-bottom/
sapwood``). They go under the tree's ``/usr/share/initramfs-tools``, the place of
packaged hooks and scripts (``/etc/initramfs-tools`` is the administrator's), so
``update-initramfs`` run in the tree (in a chroot) builds an initramfs that boots
the deployment named by ``sapwood=`` on the kernel command line, and a commit of
the tree carries them in ``/usr``. See ../shared/research/boot.md for why the
script runs in local-bottom and why the hook copies util-linux mount.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from importlib.resources import files
from pathlib import Path

from fs.sysroot.nofollow import (
    failed_midway,
    listdir_below,
    lstat_below,
    make_dirs_below,
    open_below,
    temporary_name,
)
from store import InitramfsTreeError, SapwoodError

log = logging.getLogger(__name__)

INITRAMFS_TOOLS = "usr/share/initramfs-tools"
# (source inside the package data, destination inside INITRAMFS_TOOLS)
SHIPPED = (
    ("hooks/sapwood", "hooks/sapwood"),
    ("scripts/local-bottom/sapwood", "scripts/local-bottom/sapwood"),
)
# What the tree must have for update-initramfs to run the hook, and for the hook
# to find util-linux mount (Debian's merged /usr has it at usr/bin/mount).
NEEDED = (f"{INITRAMFS_TOOLS}/hook-functions", f"{INITRAMFS_TOOLS}/init")
UTIL_LINUX_MOUNT = ("usr/bin/mount", "bin/mount")
MOUNT_POINTS = ("sysroot",)  # the initramfs moves the physical root here


def install_initramfs_hook(tree: str | os.PathLike[str]) -> list[Path]:
    """Install sapwood's initramfs-tools hook and boot script into ``tree`` (an OS
    tree with initramfs-tools, before it is committed); returns the files written.

    Both are written mode 0755 under ``tree/usr/share/initramfs-tools`` (replacing
    earlier copies), and an empty ``tree/sysroot`` is made if missing. Symbolic
    links inside the tree are never followed. Raises ``InitramfsTreeError`` when
    ``tree`` is not a directory or lacks initramfs-tools or util-linux mount, or
    something is in the way; nothing is written then. A failure while writing (a full
    disk: ``OutOfSpaceError``) says what was installed before it, and a second run
    finishes.
    """
    root = Path(tree)
    if not root.is_dir():
        raise InitramfsTreeError(tree=str(root))
    _check_needed(root)
    # every directory written into is checked before the first write, so a refusal
    # (a symlink on the way) leaves the tree as it was
    targets = [f"{INITRAMFS_TOOLS}/{dest}" for _, dest in SHIPPED]
    leftovers = []
    for relative in [t.rsplit("/", 1)[0] for t in targets] + list(MOUNT_POINTS):
        leftovers += _check_dir(root, relative)
    for target in targets:
        _check_file_temporary(root, target)
    data = files("fs.sysroot").joinpath("initramfs-tools")
    written: list[Path] = []
    try:
        _remove_leftovers(root, leftovers)  # once every check has passed (review26 2)
        for (source, _), target in zip(SHIPPED, targets, strict=True):
            content = data.joinpath(source).read_bytes()
            _write_executable(root, target, content)
            written.append(root / target)
            log.info("installed %s", root / target)
        for name in MOUNT_POINTS:
            _make_dir(root, name)
    except OSError as exc:
        raise _failed_midway(root, written, exc) from None
    return written


def _failed_midway(root: Path, written: list[Path], exc: OSError) -> SapwoodError:
    """The one line of a failure while writing (review26 3: a bare OSError named a
    temporary name relative to a descriptor); OutOfSpaceError for a full disk."""
    so_far = ", ".join(str(path.relative_to(root)) for path in written) or "nothing"
    return failed_midway(
        root,
        f"installed before it: {so_far}",
        exc,
        lambda message: InitramfsTreeError(message, tree=str(root)),
    )


def _check_needed(root: Path) -> None:
    for relative in NEEDED:
        if not (root / relative).is_file() or _has_symlink(root, relative):
            raise InitramfsTreeError(tree=str(root), missing=relative)
    if not any(_is_in_tree(root, candidate) for candidate in UTIL_LINUX_MOUNT):
        raise InitramfsTreeError(tree=str(root), missing=UTIL_LINUX_MOUNT[0])


def _is_in_tree(root: Path, relative: str) -> bool:
    """``relative`` exists with no symlink on the way (bin -> usr/bin would be
    read on the host, not in the tree, if it were absolute)."""
    return (root / relative).exists() and not _has_symlink(root, relative, but_last=True)


def _has_symlink(root: Path, relative: str, *, but_last: bool = False) -> bool:
    parts = relative.split("/")
    for count in range(1, len(parts) + (0 if but_last else 1)):
        if (root / "/".join(parts[:count])).is_symlink():
            return True
    return False


def _not_a_directory(root: Path, relative: str) -> InitramfsTreeError:
    return InitramfsTreeError(
        f"{root}: {relative} is not a directory of the tree (a symlink?)",
        tree=str(root),
        missing=relative,
    )


def _check_dir(root: Path, relative: str) -> list[str]:
    """Refuse ``root/relative`` when something on the way is not a directory (a
    symlink included), or when the temporary name its first missing part would be made
    under holds anything but a killed run's empty directory; returns that leftover, to
    be removed once every check has passed. Writes nothing."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parts = relative.split("/")
        for count in range(1, len(parts) + 1):
            path = "/".join(parts[:count])
            found = lstat_below(fd, path)
            if found is None:  # the parts below are made inside a directory made new
                return _leftover(root, fd, path)
            if not stat.S_ISDIR(found.st_mode):
                raise _not_a_directory(root, relative)
        return []
    finally:
        os.close(fd)


def _leftover(root: Path, fd: int, path: str) -> list[str]:
    """``path``'s temporary name if a killed run left its empty directory there (made
    with the umask's mode, to be renamed once 0755: the run's user's, as prepare-tree
    counts it); refuse anything else there, another user's empty directory included."""
    head, name = os.path.split(path)
    temporary = os.path.join(head, temporary_name(name))
    found = lstat_below(fd, temporary)
    if found is None:
        return []
    if stat.S_ISDIR(found.st_mode) and found.st_uid == os.geteuid():
        with contextlib.suppress(OSError):
            if not listdir_below(fd, temporary):
                return [temporary]
    raise InitramfsTreeError(
        f"{root}: {temporary} is in the way (sapwood makes {path} under that name): "
        "remove or rename it",
        tree=str(root),
        missing=temporary,
    )


def _remove_leftovers(root: Path, leftovers: list[str]) -> None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for temporary in leftovers:
            head, name = os.path.split(temporary)
            parent = open_below(fd, head)
            try:
                os.rmdir(name, dir_fd=parent)  # only an empty one
            finally:
                os.close(parent)
    finally:
        os.close(fd)


def _check_file_temporary(root: Path, relative: str) -> None:
    """Refuse a directory at the name ``relative`` is written under first (which
    _write_executable cannot unlink), before any write (review26 1: the hook was
    written, then the script refused, at every run)."""
    directory, name = relative.rsplit("/", 1)
    temporary = f"{directory}/{_file_temporary(name)}"
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        found = lstat_below(fd, temporary)
    finally:
        os.close(fd)
    if found is not None and stat.S_ISDIR(found.st_mode):
        raise _in_the_way(root, directory, _file_temporary(name))


def _file_temporary(name: str) -> str:
    return f".{name}.sapwood-tmp"


def _in_the_way(root: Path, directory: str, temporary: str) -> InitramfsTreeError:
    return InitramfsTreeError(
        f"{root}: {directory}/{temporary} is in the way (a directory?): remove it",
        tree=str(root),
        missing=f"{directory}/{temporary}",
    )


def _open_dir(root: Path, relative: str) -> int:
    """A descriptor of ``root/relative``, refusing symlinks; its missing parts made
    0755 whatever the umask, each under its name only once it has that mode (a kill
    leaves the temporary name, which the next run's _check_dir removes)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return make_dirs_below(fd, relative)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _not_a_directory(root, relative) from None
        raise
    finally:
        os.close(fd)


def _write_executable(root: Path, relative: str, content: bytes) -> None:
    """Write ``root/relative`` mode 0755, replacing it in one rename.

    The temporary is a new file made here (O_EXCL, O_NOFOLLOW): whatever a tree holds
    at its name (a leftover, or a device node, FIFO or symlink an unpacked rootfs
    put there) is unlinked first, never opened, so nothing outside the tree is written
    and nothing blocks.
    """
    directory, name = relative.rsplit("/", 1)
    fd = _open_dir(root, directory)
    temporary = _file_temporary(name)
    try:
        try:
            os.unlink(temporary, dir_fd=fd)  # unlinkat: never follows, never opens
        except FileNotFoundError:
            pass
        except OSError as error:
            if error.errno not in (errno.EISDIR, errno.EPERM):  # Linux: a directory
                raise
            raise _in_the_way(root, directory, temporary) from error
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        out_fd = os.open(temporary, flags, 0o755, dir_fd=fd)
        try:
            with os.fdopen(out_fd, "wb") as out:
                out.write(content)
                out.flush()
                os.fchmod(out.fileno(), 0o755)
                os.fsync(out.fileno())
            os.replace(temporary, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=fd)
            raise
    finally:
        os.close(fd)


def _make_dir(root: Path, relative: str) -> None:
    os.close(_open_dir(root, relative))
