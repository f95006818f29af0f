"""Comparing a commit with a real directory (is this checkout still what it was?).

Reports A (only in the directory), D (only in the commit) and M (type, content or
symlink target differ). Ownership and modes are not compared: a user-mode checkout
legitimately differs in both. Every regular file is re-hashed with the recorded
header, hardlinked ones too: a file that shares the object's inode proves nothing,
since an edit through a hardlinked checkout changes the object itself.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from fs.copy import hash_fd
from store import ContentCheck, FileHeader, Node, ObjectId, Repository, children

_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_WINDOW = 64  # files opened and announced to the kernel at once


def diff_dir(repo: Repository, node: Node, directory: Path) -> Iterator[tuple[str, bytes]]:
    """('A'|'M'|'D', path) for every difference between a commit's directory and a real one."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield from _diff(repo, node, fd)
    finally:
        os.close(fd)


def same_content(
    dirfd: int, name: bytes, header: FileHeader, object_id: ObjectId, size: int
) -> bool:
    """Whether ``name`` in ``dirfd`` is a regular file holding exactly object ``object_id``'s
    content: hashed with the object's recorded header, streamed, never followed."""
    fd = _open_regular(dirfd, name)
    if fd is None:
        return False
    try:
        return _hash_matches(fd, header, object_id, size)
    finally:
        os.close(fd)


def _open_regular(dirfd: int, name: bytes) -> int | None:
    """An fd of the regular file ``name``; None if it is anything else by now.

    O_NONBLOCK: a FIFO put there since it was listed must not hang the reader.
    """
    try:
        fd = os.open(name, _OPEN_FILE, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOENT):  # replaced or removed since listed
            return None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _hash_matches(fd: int, header: FileHeader, object_id: ObjectId, size: int) -> bool:
    check = ContentCheck(object_id, header.encode(), size)
    hash_fd(fd, size, check)
    return check.problem() is None


def _diff(repo: Repository, node: Node, dirfd: int) -> Iterator[tuple[str, bytes]]:
    committed = {child.path.rsplit(b"/", 1)[-1]: child for child in children(repo, node)}
    present = {os.fsencode(e.name): e for e in os.scandir(dirfd)}
    same = _compare_files(repo, committed, present, dirfd)
    prefix = node.path.rstrip(b"/")
    for name in sorted(committed.keys() | present.keys()):
        path = prefix + b"/" + name
        child, entry = committed.get(name), present.get(name)
        if child is None:
            yield "A", path
        elif entry is None:
            yield "D", path
        elif child.dir is not None:
            if not entry.is_dir(follow_symlinks=False):
                yield "M", path
                continue
            sub = os.open(name, _OPEN_DIR, dir_fd=dirfd)
            try:
                yield from _diff(repo, child, sub)
            finally:
                os.close(sub)
        elif not same[name]:
            yield "M", path


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
                fds.append(fd := _open_regular(dirfd, name))
                if fd is not None:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            for fd, (name, file_id, header, size) in zip(fds, window, strict=True):
                same[name] = fd is not None and _hash_matches(fd, header, file_id, size)
        finally:
            for fd in fds:
                if fd is not None:
                    os.close(fd)
    return same
