"""Comparing a commit with a real directory (is this checkout still what it was?).

Reports A (only in the directory), D (only in the commit) and M (type, content or
symlink target differ). Ownership and modes are not compared: a user-mode checkout
legitimately differs in both. Every regular file is re-hashed with the recorded
header, hardlinked ones too: a file that shares the object's inode proves nothing,
since an edit through a hardlinked checkout changes the object itself.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from store import (
    Change,
    FileHeader,
    Node,
    ObjectId,
    Repository,
    check_content,
    children,
    open_regular,
)

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_WINDOW = 64  # files opened and announced to the kernel at once


def diff_dir(repo: Repository, node: Node, directory: Path) -> Iterator[Change]:
    """A Change for every difference between a commit's directory ``node`` and a real
    one: ``old`` is the commit's node (None for "A"), ``new`` always None (the
    directory's side is not in the repository)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield from _diff(repo, node, fd)
    finally:
        os.close(fd)


def _diff(repo: Repository, node: Node, dirfd: int) -> Iterator[Change]:
    committed = {child.path.rsplit(b"/", 1)[-1]: child for child in children(repo, node)}
    present = {os.fsencode(e.name): e for e in os.scandir(dirfd)}
    same = _compare_files(repo, committed, present, dirfd)
    prefix = node.path.rstrip(b"/")
    for name in sorted(committed.keys() | present.keys()):
        path = prefix + b"/" + name
        child, entry = committed.get(name), present.get(name)
        if child is None:
            yield Change("A", path, None, None)
        elif entry is None:
            yield Change("D", path, child, None)
        elif child.dir is not None:
            if not entry.is_dir(follow_symlinks=False):
                yield Change("M", path, child, None)
                continue
            sub = os.open(name, _OPEN_DIR, dir_fd=dirfd)
            try:
                yield from _diff(repo, child, sub)
            finally:
                os.close(sub)
        elif not same[name]:
            yield Change("M", path, child, None)


def _compare_files(
    repo: Repository,
    committed: dict[bytes, Node],
    present: dict[bytes, os.DirEntry[str]],
    dirfd: int,
) -> dict[bytes, bool]:
    """Whether each file of the commit that the directory also holds is the same there.

    Files of the right type and size are hashed in windows of ``_WINDOW``: each window
    is opened and announced to the kernel (posix_fadvise WILLNEED) before the first is
    read, so that a cold disk has many reads in flight instead of one.
    """
    files = [(n, c.file) for n, c in committed.items() if c.file is not None and n in present]
    headers = repo.read_file_headers([file_id for _, file_id in files])
    same: dict[bytes, bool] = {}
    to_hash: list[tuple[bytes, ObjectId, FileHeader, int]] = []
    for (name, file_id), (header, size) in zip(files, headers, strict=True):
        try:
            st = present[name].stat(follow_symlinks=False)
        except FileNotFoundError:  # removed since it was listed
            same[name] = False
            continue
        if header.is_symlink:
            same[name] = stat.S_ISLNK(st.st_mode) and (
                os.readlink(name, dir_fd=dirfd) == header.symlink_target
            )
        elif not stat.S_ISREG(st.st_mode) or st.st_size != size:
            same[name] = False
        else:
            to_hash.append((name, file_id, header, size))
    for start in range(0, len(to_hash), _WINDOW):
        window = to_hash[start : start + _WINDOW]
        fds: list[int | None] = []
        try:
            for name, *_ in window:
                fds.append(fd := open_regular(name, dirfd))
                if fd is not None:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            for fd, (name, file_id, header, size) in zip(fds, window, strict=True):
                same[name] = fd is not None and _matches(fd, header, file_id, size)
        finally:
            for fd in fds:
                if fd is not None:
                    os.close(fd)
    return same


def _matches(fd: int, header: FileHeader, file_id: ObjectId, size: int) -> bool:
    return check_content(fd, file_id, header.encode(), size) is None
