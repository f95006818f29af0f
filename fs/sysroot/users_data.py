"""Users' data in a deployment: the files written at run time where a tree that is not
laid out for deployment keeps them (/home, /root, /srv, /opt, /mnt, /usr/local as real
directories of the deployment, docs/deployments.md "/var").

A deployment's files outside /etc and /var are hardlinks of the repository's objects
(deploy checks out with require_hardlinks), so a regular file there with one link only
is no object: something wrote it after the deploy. A dropped deployment holding such a
file is left on disk (fs/sysroot/retention.py) rather than removed with what a user
keeps in it (attack23 21). Files a user hardlinked to each other look like objects and
are missed; a symlink or an empty directory is not counted (nothing is lost with it).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# The directories a tree laid out as OSTree's links into /var instead (``prepare-tree``).
USERS_DIRS = ("home", "root", "srv", "opt", "mnt", "usr/local")
WALK_LIMIT = 100_000  # entries looked at in one deployment before it is kept unexamined
MAX_DEPTH = 64  # levels below a users' directory (a descriptor each) looked into
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def users_file(deployment: Path, limit: int = WALK_LIMIT) -> str | None:
    """The first file (relative to ``deployment``) below its users' directories that is
    not one of the commit's objects; the directory walked last, with "(and more not
    looked at)", once ``limit`` entries were looked at without an answer; None when
    there is none. Never follows a symlink, never leaves the deployment's filesystem."""
    try:
        root = os.open(deployment, _DIR)
    except OSError:
        return None
    try:
        device = os.fstat(root).st_dev
        budget = [limit]
        for relative in USERS_DIRS:
            found = _walk(root, relative, device, budget)
            if found is not None:
                return found
    finally:
        os.close(root)
    return None


def _walk(root: int, relative: str, device: int, budget: list[int]) -> str | None:
    """Depth first below ``relative``: one descriptor a level, each level's names read
    whole before going down (as fs/sysroot/removal.py walks)."""
    try:
        top = _open_below(root, relative)
    except OSError:
        return None  # absent, a symlink (into var/, as a prepared tree has), a file
    try:
        listing = _listing(top)
    except OSError:
        os.close(top)
        return f"{relative} (not readable)"
    frames: list[tuple[int, list[tuple[str, bool]], str]] = [(top, listing, relative)]
    try:
        while frames:
            fd, names, here = frames[-1]
            if not names:
                os.close(frames.pop()[0])
                continue
            budget[0] -= 1
            if budget[0] < 0 or len(frames) > MAX_DEPTH:
                return f"{here} (and more not looked at)"
            name, is_dir = names.pop()
            path = f"{here}/{name}"
            if is_dir:
                child = _enter(fd, name, device)
                if child is not None:
                    try:
                        listing = _listing(child)
                    except OSError:
                        os.close(child)
                        return f"{path} (not readable)"  # cannot tell: kept
                    frames.append((child, listing, path))
            elif _written_here(fd, name):
                return path
    finally:
        for fd, _, _ in frames:
            os.close(fd)
    return None


def _listing(fd: int) -> list[tuple[str, bool]]:
    with os.scandir(fd) as entries:
        return sorted(((e.name, e.is_dir(follow_symlinks=False)) for e in entries), reverse=True)


def _enter(parent: int, name: str, device: int) -> int | None:
    """The directory ``name`` of ``parent``, unless it is gone or another filesystem."""
    try:
        fd = os.open(name, _DIR, dir_fd=parent)
    except OSError:
        return None
    if os.fstat(fd).st_dev != device:
        os.close(fd)
        return None
    return fd


def _written_here(parent: int, name: str) -> bool:
    """Whether ``name`` of ``parent`` is a regular file with one link: no object."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1


def _open_below(root: int, relative: str) -> int:
    """A descriptor of ``root``/``relative``, each component opened without following
    a symlink."""
    fd = os.dup(root)
    try:
        for part in relative.split("/"):
            child = os.open(part, _DIR, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd
