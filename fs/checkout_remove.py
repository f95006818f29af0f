"""Removing what a checkout must remove (whiteouts, a failed checkout), never
following a symlink and never entering another filesystem."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from fs.checkout_options import CheckoutConflictError
from store import MAX_TREE_DEPTH, InvalidNameError, ObjectId, check_name, show_path

log = logging.getLogger(__name__)
WHITEOUT = b".wh."
FileEntries = Sequence[tuple[bytes, ObjectId]]


def open_dir(path: Path | bytes, dir_fd: int | None) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def open_existing_dir(name: Path | bytes, dir_fd: int | None, where: str) -> int:
    """A directory already in DEST; anything else (a symlink too) is a conflict."""
    try:
        return open_dir(name, dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise CheckoutConflictError(
                f"{where}: exists in DEST and is not a directory (symlinks are not followed)"
            ) from None
        raise


def split_whiteouts(
    files: FileEntries, prefix: bytes
) -> tuple[FileEntries, list[tuple[bytes, bytes]]]:
    """(the files that are not whiteouts, [(name a whiteout removes, the whiteout's path)])."""
    kept: list[tuple[bytes, ObjectId]] = []
    targets: list[tuple[bytes, bytes]] = []
    for name, file_id in files:
        if not name.startswith(WHITEOUT):
            kept.append((name, file_id))
            continue
        target = _whiteout_target(name, prefix + name)
        if target is not None:
            targets.append((target, prefix + name))
    return kept, targets


def _whiteout_target(name: bytes, where: bytes) -> bytes | None:
    """The entry ``.wh.NAME`` removes: NAME, which must be a valid entry name.

    '.wh..' and '.wh...' would name the directory itself and its parent (outside DEST
    at the top); they, and '.wh.' alone, are refused: a layer holding them is broken.
    """
    target = name[len(WHITEOUT) :]
    if target.startswith(WHITEOUT):
        log.debug("%s: an aufs marker (opaque directories are not supported)", show_path(where))
        return None
    try:
        return check_name(target)
    except InvalidNameError as exc:
        raise InvalidNameError(
            f"whiteout {show_path(where)} refused: {exc}; "
            "a whiteout removes only an entry of its own directory"
        ) from None


def require_device(fd: int, device: int, where: bytes) -> None:
    """Refuse to empty a directory of another filesystem than ``device`` (a mount point)."""
    if os.fstat(fd).st_dev != device:
        raise CheckoutConflictError(
            f"{show_path(where)}: is on another filesystem (a mount point): not removed"
        )


def empty_dir(fd: int, where: bytes, depth: int = 0) -> None:
    """Remove everything inside an open directory, never following a symlink and never
    entering another filesystem.

    Subdirectories are made writable first: a partial checkout may hold read-only ones.
    A directory nested deeper than MAX_TREE_DEPTH below is refused before anything of
    it is removed (the walk recurses, one fd a level).
    """
    if depth == 0:
        require_shallow(fd, where)
    device = os.fstat(fd).st_dev
    for entry in os.scandir(fd):
        name = os.fsencode(entry.name)
        if entry.is_dir(follow_symlinks=False):
            child = open_dir(name, fd)
            try:
                require_device(child, device, where + b"/" + name)
                os.fchmod(child, 0o700)
                empty_dir(child, where + b"/" + name, depth + 1)
            finally:
                os.close(child)
            os.rmdir(name, dir_fd=fd)
        else:
            os.unlink(name, dir_fd=fd)


def require_shallow(fd: int, where: bytes) -> None:
    """Refuse to remove a tree deeper than MAX_TREE_DEPTH (checked without recursion,
    one fd a level)."""
    fds = [os.dup(fd)]
    listings = [os.scandir(fds[0])]
    try:
        while listings:
            entry = next(listings[-1], None)
            if entry is None:
                listings.pop().close()
                os.close(fds.pop())
            elif entry.is_dir(follow_symlinks=False):
                if len(fds) > MAX_TREE_DEPTH:
                    raise CheckoutConflictError(
                        f"{show_path(where)}: nests directories more than {MAX_TREE_DEPTH} "
                        "deep: not removed"
                    )
                fds.append(open_dir(os.fsencode(entry.name), fds[-1]))
                listings.append(os.scandir(fds[-1]))
    finally:
        for listing in listings:
            listing.close()
        for leftover in fds:
            os.close(leftover)


def remove_tree(path: Path) -> None:
    """Remove a (partial) checkout."""
    if not os.path.lexists(path):
        return
    try:
        fd = open_dir(path, None)
    except OSError:
        os.unlink(path)
        return
    try:
        os.fchmod(fd, 0o700)
        empty_dir(fd, os.fsencode(path))
    finally:
        os.close(fd)
    os.rmdir(path)
