"""Removing sapwood's own directories of a sysroot: dropped or partial deployments,
kernels no deployment uses, the loader directory not in use.

Unlike a checkout's DEST (fs/checkout_remove.py refuses a tree deeper than
MAX_TREE_DEPTH), these are sapwood's to remove whatever they hold: what the
administrator or any user left in a deployment's /etc or /tmp (a tree of any depth,
a file made immutable or append-only with chattr) must never keep the next deploy
from removing it. The walk is iterative, one descriptor a level (no recursion, no
path that grows), never follows a symlink and never enters another filesystem (a
mount point inside is refused with one line naming it: unmount it first). The
immutable and append-only flags are cleared, as OSTree clears a deployment's
immutable bit before deleting it; a device node is never opened.
"""

from __future__ import annotations

import array
import errno
import fcntl
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from store import SysrootError, show_path

log = logging.getLogger(__name__)

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL = 0x00000010
FS_APPEND_FL = 0x00000020
_LOCKED = FS_IMMUTABLE_FL | FS_APPEND_FL
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


# asked of each non-directory before it is unlinked: (its directory, relative to the
# tree removed, as bytes; that directory's descriptor; its name) -> keep it?
Keep = Callable[[bytes, int, bytes], bool]


def remove_own_tree(path: Path, keep: Keep | None = None) -> str | None:
    """Remove ``path`` and everything below it (a non-directory is unlinked); nothing
    when it is absent. SysrootError, naming the path, for what cannot be removed. At
    the first file ``keep`` says to keep (a deployment's users' data written since it
    was looked for: review21 8), it stops, the rest left, and returns that file's path
    (else None)."""
    where = os.fsencode(path)
    parent, name = os.path.split(where)
    try:
        parent_fd = os.open(parent or b".", _DIR)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _cannot(where, exc) from None
    try:
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISDIR(st.st_mode):
            return _remove_dir(parent_fd, name, where, keep)
        _unlink(parent_fd, name, where)
        return None
    except OSError as exc:
        raise _cannot(where, exc) from None
    finally:
        os.close(parent_fd)


def _remove_dir(parent_fd: int, name: bytes, where: bytes, keep: Keep | None) -> str | None:
    """Empty and remove the directory ``name`` of ``parent_fd``, depth first; stop at
    a file ``keep`` keeps and return its path."""
    top = _enter(parent_fd, name, where, None)
    device = os.fstat(top).st_dev
    # one frame a level: (fd, names left to look at, path for messages)
    frames: list[tuple[int, list[tuple[bytes, bool]], bytes]] = [(top, _listing(top), where)]
    current = where
    try:
        while frames:
            fd, names, here = frames[-1]
            if not names:
                frames.pop()
                os.close(fd)
                child_name = os.path.basename(here)
                current = here
                _rmdir(frames[-1][0] if frames else parent_fd, child_name, here)
                continue
            child, is_dir = names.pop()
            current = here + b"/" + child
            if is_dir:
                child_fd = _enter(fd, child, current, device)
                frames.append((child_fd, _listing(child_fd), current))
            else:
                if keep is not None and keep(here[len(where) + 1 :], fd, child):
                    return show_path(current)
                _unlink(fd, child, current)
    except OSError as exc:
        raise _cannot(current, exc) from None
    finally:
        for fd, _, _ in frames:
            os.close(fd)
    return None


def _listing(fd: int) -> list[tuple[bytes, bool]]:
    """(name, is a directory) of each entry of the directory ``fd``, read whole before
    anything is removed (the type from readdir: no stat an entry)."""
    with os.scandir(fd) as entries:
        return [(os.fsencode(e.name), e.is_dir(follow_symlinks=False)) for e in entries]


def _enter(parent_fd: int, name: bytes, where: bytes, device: int | None) -> int:
    """A descriptor of the directory ``name``, made removable: on ``device`` (no mount
    point), its immutable/append-only flags cleared, writable by its owner."""
    fd = os.open(name, _DIR, dir_fd=parent_fd)
    try:
        st = os.fstat(fd)
        if device is not None and st.st_dev != device:
            raise SysrootError(
                f"{show_path(where)}: a mount point (another filesystem): not removed; "
                "unmount it, then run sapwood admin cleanup"
            )
        _unlock(fd, where)
        if st.st_mode & 0o700 != 0o700:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlink(dir_fd: int, name: bytes, where: bytes) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
        return
    except FileNotFoundError:
        return
    except PermissionError as exc:
        if exc.errno != errno.EPERM:
            raise _cannot(where, exc) from None
    except OSError as exc:
        raise _cannot(where, exc) from None
    # EPERM: an immutable or append-only file (its directory's flags are cleared on
    # entering it). Only a regular file is opened to clear them: opening a device
    # node or a FIFO could act on a device or wait.
    if stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
        try:
            _unlock(fd, where)
        finally:
            os.close(fd)
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError as exc:
        raise _cannot(where, exc) from None


def _rmdir(parent_fd: int, name: bytes, where: bytes) -> None:
    try:
        os.rmdir(name, dir_fd=parent_fd)
    except OSError as exc:
        raise _cannot(where, exc) from None


def _unlock(fd: int, where: bytes) -> None:
    """Clear the immutable and append-only flags of ``fd`` where it has them."""
    flags = array.array("i", [0])
    try:
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
    except OSError:
        return  # a filesystem without such flags: nothing to clear
    if not flags[0] & _LOCKED:
        return
    log.info("%s: clearing its immutable/append-only flag to remove it", show_path(where))
    flags[0] &= ~_LOCKED
    try:
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags, True)
    except OSError:
        raise SysrootError(
            f"{show_path(where)}: immutable or append-only, and the flag cannot be "
            "cleared: not removed (clear its flags with chattr, then run sapwood admin cleanup)"
        ) from None


def _cannot(where: bytes, exc: OSError) -> SysrootError:
    reason = exc.strerror or str(exc)
    return SysrootError(f"{show_path(where)}: cannot be removed: {reason}")
