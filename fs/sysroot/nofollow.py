"""Directories inside a tree opened component by component, never through a symlink, and
the entries in them looked at, read and written from there: what a tree holds (a
deployment written by its running system, a tree being laid out) must not make sapwood
look or write outside it. What is made there (a file, a directory) is made under a
temporary name beside its own (``.NAME.sapwood-new``) and renamed once whole."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import stat
from collections.abc import Callable
from pathlib import Path

from store import OutOfSpaceError, SapwoodError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW = ".sapwood-new"  # what is being made is named .NAME.sapwood-new until it is whole


def temporary_name(name: str) -> str:
    """The name ``name`` is made under, beside it, until it is whole."""
    return f".{name}{NEW}"


def open_below(root: int, relative: str) -> int:
    """A descriptor of the directory ``relative`` below the descriptor ``root``, each
    component opened with O_NOFOLLOW (ELOOP for a symlink, ENOTDIR for a file). "" is
    ``root`` itself (a new descriptor)."""
    return _walk_below(root, relative, None)


def make_dirs_below(root: int, relative: str, mode: int = 0o755) -> int:
    """A descriptor of the directory ``relative`` below ``root``, as open_below's, each
    missing component made first by make_dir: ``mode`` whatever the umask, and under its
    name only once it has it."""
    return _walk_below(root, relative, mode)


def _walk_below(root: int, relative: str, mode: int | None) -> int:
    _check_below(relative)
    fd = os.dup(root)
    try:
        for part in filter(None, relative.split("/")):
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if mode is None:
                    raise
                make_dir(fd, part, mode)
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_below(relative: str) -> None:
    """Refuse a path that could name something outside the root: O_NOFOLLOW stops
    symlinks, not ".." (review27 5: every caller passes a constant today)."""
    if relative.startswith("/") or ".." in relative.split("/"):
        raise OSError(errno.EINVAL, "not a path below the tree", relative)


def _split(relative: str) -> tuple[str, str]:
    """``relative``'s directory and last name, checked first."""
    _check_below(relative)
    return os.path.split(relative)


def lstat_below(root: int, relative: str) -> os.stat_result | None:
    """lstat of ``relative`` below ``root``, its directories entered without following
    a symlink; None when absent (or a directory on the way is not one)."""
    head, name = _split(relative)
    try:
        parent = open_below(root, head)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None
    finally:
        os.close(parent)


def readlink_below(root: int, relative: str) -> str:
    """The target of the symlink ``relative`` below ``root``."""
    head, name = _split(relative)
    parent = open_below(root, head)
    try:
        return os.readlink(name, dir_fd=parent)
    finally:
        os.close(parent)


def listdir_below(root: int, relative: str) -> list[str]:
    """The names in the directory ``relative`` below ``root``."""
    fd = open_below(root, relative)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def read_below(root: int, relative: str) -> str | None:
    """The first 64 KiB of the regular file ``relative`` below ``root``, as text; None
    when it is not one (absent, a symlink, a FIFO: never waited for)."""
    head, name = _split(relative)
    try:
        parent = open_below(root, head)
    except OSError:
        return None
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO: no wait
        fd = os.open(name, flags, dir_fd=parent)
    except OSError:
        return None
    finally:
        os.close(parent)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return None  # swapped since the plan looked
        return file.read(1 << 16).decode("utf-8", "replace")


def write_below(root: int, relative: str, text: str) -> None:
    """``text`` into ``relative`` below ``root`` (0644, its directories made 0755 where
    missing, as make_dirs_below makes them), replacing a regular file or a link there by
    a rename: never written through a symlink, nothing half-written left."""
    head, name = _split(relative)
    parent = make_dirs_below(root, head)
    try:
        temporary = temporary_name(name)
        # sapwood's own name: whatever a killed run (or the tree's maker) left there goes
        # first, and the file is made anew (a FIFO there hung the open: review23 4)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=parent)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temporary, flags, 0o644, dir_fd=parent)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(text.encode())
                os.fchmod(file.fileno(), 0o644)  # the file made, whatever is at its name
            os.rename(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:  # a full disk: no half-written file left in the tree
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=parent)
            raise
    finally:
        os.close(parent)


def make_dir(parent: int, name: str, mode: int) -> None:
    """The directory ``name`` made in the directory ``parent`` with ``mode``, whatever
    the umask, and under ``name`` only once it has it: made under its temporary name
    (mkdir: EEXIST if anything is there), opened with O_NOFOLLOW (never a symlink
    swapped in) and refused unless it is the empty directory just made, fchmodded
    through that descriptor, then renamed to ``name`` only if the temporary name still
    holds it and nothing is at ``name`` (EEXIST otherwise). A kill leaves the temporary
    name, never ``name`` with the umask's mode; a failure removes the temporary
    directory (rmdir: only an empty one)."""
    temporary = temporary_name(name)
    os.mkdir(temporary, mode, dir_fd=parent)
    try:
        made = os.open(temporary, DIR_FLAGS, dir_fd=parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rmdir(temporary, dir_fd=parent)
        raise
    try:
        _check_just_made(made, temporary)  # raises before anything is done to it
        try:
            os.fchmod(made, mode)
            if not _same(os.stat(temporary, dir_fd=parent, follow_symlinks=False), made):
                raise _swapped(temporary)
            rename_noreplace(parent, temporary, name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.rmdir(temporary, dir_fd=parent)
            raise
    finally:
        os.close(made)


def _check_just_made(fd: int, temporary: str) -> None:
    """Refuse the directory at the temporary name unless it is empty, as the one mkdir
    just made. A process that can write the parent could rmdir it and rename a
    directory of its choice there (one of root's, with files) for the fchmod to open
    to everyone and the rename to make the place (review25 2). An empty one of its own
    swapped in becomes the place: it could have made the place itself before the run.
    (No st_nlink test: btrfs counts 1 for every directory; no owner test: NFS's root
    squashing, bindfs or sshfs give what mkdir makes another: review25 7, 8.)"""
    if os.listdir(fd):
        raise _swapped(temporary)


def _same(found: os.stat_result, fd: int) -> bool:
    held = os.fstat(fd)
    return (found.st_dev, found.st_ino) == (held.st_dev, held.st_ino)


def _swapped(temporary: str) -> OSError:
    return FileExistsError(
        errno.EEXIST, "replaced by another directory while it was being made", temporary
    )


def rename_noreplace(parent: int, source: str, target: str) -> None:
    """Rename ``source`` to ``target`` in ``parent``, failing with EEXIST if anything is
    at ``target``: renameat2's RENAME_NOREPLACE, atomically (review25 3: a directory
    made at the target between a look and a plain rename was replaced). Where the
    kernel or filesystem has no renameat2 (ENOSYS, EINVAL), or a sandbox denies a call it
    does not know (EPERM: review25 9), a look then a rename."""
    function = _renameat2()
    if function is not None:
        encoded = os.fsencode(source), os.fsencode(target)
        if any(b"\0" in name for name in encoded):  # C would cut it there (review27 2)
            raise ValueError("embedded null byte")
        if function(parent, encoded[0], parent, encoded[1], 1) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.EPERM):
            # both names, as os.rename's error has them (review27 3)
            raise OSError(err, os.strerror(err), source, None, target)
    try:
        os.stat(target, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(source, target, src_dir_fd=parent, dst_dir_fd=parent)
    else:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target)


@functools.cache
def _renameat2() -> Callable[[int, bytes, int, bytes, int], int] | None:
    try:
        function: Callable[[int, bytes, int, bytes, int], int]
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # a C library without it (glibc < 2.28)
        return None
    return function


def failed_midway(
    root: Path, done: str, exc: OSError, otherwise: Callable[[str], SapwoodError]
) -> SapwoodError:
    """The one line of work in the tree ``root`` that failed after its checks (a full
    disk, an immutable directory), saying what was ``done`` before it: OutOfSpaceError
    for a full disk or quota (what a library caller tells apart, as from deploy's),
    ``otherwise(message)`` else."""
    names = [n for n in (exc.filename, exc.filename2) if isinstance(n, str)]
    where = f" ({' -> '.join(names)})" if names else ""
    message = (
        f"{root}: {exc.strerror or exc}{where}; {done}; run it again once that is fixed, to finish"
    )
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutOfSpaceError(message)
    return otherwise(message)
