"""Comparing a commit with a real directory (is this checkout still what it was?).

Reports A (only in the directory), D (only in the commit) and M (type, content or
symlink target differ). Ownership and modes are not compared: a user-mode checkout
legitimately differs in both. A hardlinked file that shares the object's inode is
equal without being read; other files are re-hashed with the recorded header.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from store import Node, Repository, children

_CHUNK = 1 << 20


def diff_dir(repo: Repository, node: Node, directory: Path) -> Iterator[tuple[str, bytes]]:
    """('A'|'M'|'D', path) for every difference between a commit's directory and a real one."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield from _diff(repo, node, fd)
    finally:
        os.close(fd)


def _diff(repo: Repository, node: Node, dirfd: int) -> Iterator[tuple[str, bytes]]:
    committed = {child.path.rsplit(b"/", 1)[-1]: child for child in children(repo, node)}
    present = {os.fsencode(e.name): e for e in os.scandir(dirfd)}
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
            sub = os.open(
                name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd
            )
            try:
                yield from _diff(repo, child, sub)
            finally:
                os.close(sub)
        elif not _same_file(repo, child, name, dirfd):
            yield "M", path


def _same_file(repo: Repository, child: Node, name: bytes, dirfd: int) -> bool:
    assert child.file is not None
    header, size = repo.read_file_header(child.file)
    st = os.lstat(name, dir_fd=dirfd)
    if header.is_symlink:
        return stat.S_ISLNK(st.st_mode) and os.readlink(name, dir_fd=dirfd) == header.symlink_target
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        return False
    try:
        obj = os.stat(repo.content.pathstr(child.file))
        if (obj.st_dev, obj.st_ino) == (st.st_dev, st.st_ino):
            return True  # the object itself (fsck vouches for its content)
    except FileNotFoundError:
        pass
    hasher = header.hasher()
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    with os.fdopen(fd, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            hasher.update(chunk)
    return hasher.digest() == child.file
