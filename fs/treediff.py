"""Comparing a commit with a real directory: the paths a re-commit of it would change.

Reports A (only in the directory), D (only in the commit) and M: the type, the
content, the symlink target or the permission bits differ, or (without user mode,
outside bare-user-only) the owner. Every regular file is re-hashed with the recorded
header, hardlinked ones too: a file that shares the object's inode proves nothing,
since an edit through a hardlinked checkout changes the object itself.

Permission bits are compared as a default commit records them: all of them (07777),
or with ``user_mode`` as a user-mode checkout shows the recorded ones (files without
setuid, setgid, sticky and world-write; directories without setuid and setgid), so
that a fresh ``checkout -U`` diffs clean and a chmod shows. Owners are compared
without user mode only: a user-mode checkout belongs to its caller. A file of a
``checkout -U -H`` farm still linked to its object, unchanged, in a directory commit
trusts (``store.still_linked``: the one rule both use) is no change of bits or owner
either way: commit takes its recorded header. Xattrs are not
compared (see docs/decisions.md, "Round-trip checkouts").
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from fs.checkout_options import user_dir_mode
from store import (
    Change,
    FileHeader,
    LinkedObject,
    Node,
    ObjectId,
    RepoMode,
    Repository,
    check_content,
    children,
    open_regular,
    still_linked,
    user_checkout_mode,
)

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_WINDOW = 64  # files opened and announced to the kernel at once


def diff_dir(
    repo: Repository, node: Node, directory: Path, *, user_mode: bool = False
) -> Iterator[Change]:
    """A Change for every difference between a commit's directory ``node`` and a real
    one: ``old`` is the commit's node (None for "A"), ``new`` always None (the
    directory's side is not in the repository). ``node`` itself is "M" when the
    directory's own bits (or owner) differ from its recorded ones."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        differ = _Differ(repo, user_mode)
        if differ.dir_differs(node, os.fstat(fd)):
            yield Change("M", node.path, node, None)
        yield from differ.diff(node, fd)
    finally:
        os.close(fd)


class _Differ:
    def __init__(self, repo: Repository, user_mode: bool) -> None:
        self.repo = repo
        self.user_mode = user_mode
        self.owners = not user_mode and repo.mode is not RepoMode.BARE_USER_ONLY  # it records 0:0
        self.user_objects = repo.mode in (RepoMode.BARE_USER, RepoMode.BARE_USER_ONLY)
        self._dir_meta: dict[ObjectId, tuple[int, int, int]] = {}

    def diff(self, node: Node, dirfd: int) -> Iterator[Change]:
        committed = {child.path.rsplit(b"/", 1)[-1]: child for child in children(self.repo, node)}
        present = {os.fsencode(e.name): e for e in os.scandir(dirfd)}
        same = self._compare_files(committed, present, dirfd)
        prefix = node.path.rstrip(b"/")
        for name in sorted(committed.keys() | present.keys()):
            path = prefix + b"/" + name
            child, entry = committed.get(name), present.get(name)
            if child is None:
                yield Change("A", path, None, None)
            elif entry is None:
                yield Change("D", path, child, None)
            elif child.dir is not None:
                yield from self._subdir(child, name, entry, dirfd)
            elif not same[name]:
                yield Change("M", path, child, None)

    def _subdir(
        self, child: Node, name: bytes, entry: os.DirEntry[str], dirfd: int
    ) -> Iterator[Change]:
        if not entry.is_dir(follow_symlinks=False):
            yield Change("M", child.path, child, None)
            return
        sub = os.open(name, _OPEN_DIR, dir_fd=dirfd)
        try:
            if self.dir_differs(child, os.fstat(sub)):
                yield Change("M", child.path, child, None)
            yield from self.diff(child, sub)
        finally:
            os.close(sub)

    def dir_differs(self, node: Node, st: os.stat_result) -> bool:
        """Whether a re-commit would record other bits (or owner) for this directory."""
        assert node.dir is not None
        meta_id = node.dir.meta
        recorded = self._dir_meta.get(meta_id)
        if recorded is None:
            meta = self.repo.read_dirmeta(meta_id)
            recorded = self._dir_meta[meta_id] = (meta.uid, meta.gid, meta.mode)
        uid, gid, mode = recorded
        bits = user_dir_mode(mode) if self.user_mode else stat.S_IMODE(mode)
        return self._differs(uid, gid, bits, st)

    def _file_differs(self, header: FileHeader, st: os.stat_result) -> bool:
        """Whether a re-commit would record other bits (or owner) for this file."""
        if header.is_symlink:  # a symlink's bits are always 0777: only the owner counts
            return self.owners and (st.st_uid, st.st_gid) != (header.uid, header.gid)
        bits = user_checkout_mode(header.mode) if self.user_mode else stat.S_IMODE(header.mode)
        return self._differs(header.uid, header.gid, bits, st)

    def _linked(
        self,
        file_id: ObjectId,
        header: FileHeader,
        size: int,
        st: os.stat_result,
        parent: os.stat_result,
    ) -> bool:
        """Whether a file is its own object in a user-mode farm (``checkout -U -H``),
        unchanged since and in a directory commit trusts (``store.still_linked``, the
        rule commit applies) and on the object's inode. A commit takes such a file's
        recorded header (owner, setuid bits) without reading it (store/inodes.py), so
        its bits and owner are no change; its content is still re-hashed, as a write
        through the farm keeps the inode."""
        recorded = LinkedObject(file_id, header.uid, header.gid, header.mode)
        if not self.user_objects or not still_linked(self.repo.mode, st, parent, recorded, size):
            return False
        try:
            obj = os.lstat(self.repo.object_path(file_id))
        except OSError:
            return False
        return (obj.st_dev, obj.st_ino) == (st.st_dev, st.st_ino)

    def _differs(self, uid: int, gid: int, bits: int, st: os.stat_result) -> bool:
        if stat.S_IMODE(st.st_mode) != bits:
            return True
        return self.owners and (st.st_uid, st.st_gid) != (uid, gid)

    def _compare_files(
        self,
        committed: dict[bytes, Node],
        present: dict[bytes, os.DirEntry[str]],
        dirfd: int,
    ) -> dict[bytes, bool]:
        """Whether each file of the commit that the directory also holds is the same there.

        Files of the right type, size and metadata are hashed in windows of ``_WINDOW``:
        each window is opened and announced to the kernel (posix_fadvise WILLNEED)
        before the first is read, so that a cold disk has many reads in flight.
        """
        files = [(n, c.file) for n, c in committed.items() if c.file is not None and n in present]
        headers = self.repo.read_file_headers([file_id for _, file_id in files])
        parent = os.fstat(dirfd)
        same: dict[bytes, bool] = {}
        to_hash: list[tuple[bytes, ObjectId, FileHeader, int]] = []
        for (name, file_id), (header, size) in zip(files, headers, strict=True):
            told = self._same_unread(name, present[name], file_id, header, size, dirfd, parent)
            if told is None:
                to_hash.append((name, file_id, header, size))
            else:
                same[name] = told
        for start in range(0, len(to_hash), _WINDOW):
            same.update(_hash_window(to_hash[start : start + _WINDOW], dirfd))
        return same

    def _same_unread(
        self,
        name: bytes,
        entry: os.DirEntry[str],
        file_id: ObjectId,
        header: FileHeader,
        size: int,
        dirfd: int,
        parent: os.stat_result,
    ) -> bool | None:
        """Whether the directory's file ``name`` is the commit's, where that shows without
        reading its content (gone, a symlink, another type or size, other bits or owner
        and not the object itself); None if only hashing it can tell."""
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # removed since it was listed
            return False
        if header.is_symlink:
            return (
                stat.S_ISLNK(st.st_mode)
                and os.readlink(name, dir_fd=dirfd) == header.symlink_target
                and not self._file_differs(header, st)
            )
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            return False
        if self._file_differs(header, st) and not self._linked(file_id, header, size, st, parent):
            return False  # its bits or owner changed: no need to read it
        return None


def _hash_window(
    window: list[tuple[bytes, ObjectId, FileHeader, int]], dirfd: int
) -> dict[bytes, bool]:
    fds: list[int | None] = []
    same: dict[bytes, bool] = {}
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
