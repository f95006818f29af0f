"""Directories inside a tree opened component by component, never through a symlink:
what a tree holds (a deployment written by its running system, a tree being laid out)
must not make sapwood look or write outside it."""

from __future__ import annotations

import contextlib
import os

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_below(root: int, relative: str, make: bool = False) -> int:
    """A descriptor of the directory ``relative`` below the descriptor ``root``, each
    component opened with O_NOFOLLOW (ELOOP for a symlink, ENOTDIR for a file), made
    0755 first where missing with ``make``. "" is ``root`` itself (a new descriptor)."""
    fd = os.dup(root)
    try:
        for part in filter(None, relative.split("/")):
            if make:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            child = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd
