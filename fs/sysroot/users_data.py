"""Users' data in a deployment: the files written at run time where a tree that is not
laid out for deployment keeps them (/home, /root, /srv, /opt, /mnt, /usr/local as real
directories of the deployment, docs/deployments.md "/var").

A deployment's files outside /etc and /var are hardlinks of the repository's objects
(deploy checks out with require_hardlinks): a regular file there is the commit's if its
commit has one of that name in that directory and it is that object's very inode; any
other (one link only, or hardlinked by a user to another of theirs: a ``cp -al``
backup, review21 2) was written after the deploy. A dropped deployment holding such a
file is left on disk (fs/sysroot/retention.py) rather than removed with what a user
keeps in it (attack23 21). A symlink or an empty directory is not counted (nothing is
lost with it). A commit's file edited in place (the object written through: its mtime,
0 in every object, is then the edit's) counts as users' data too.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

from fs.sysroot.nofollow import DIR_FLAGS, open_below
from store import ObjectId, Repository, SapwoodError, lookup

# The directories a tree laid out as OSTree's links into /var instead (``prepare-tree``).
USERS_DIRS = ("home", "root", "srv", "opt", "mnt", "usr/local")
# levels below a users' directory looked into (a descriptor each): deeper, kept unexamined.
# No bound on entries: the removal that follows walks them all the same (review21 3: a
# bound counted the commit's own files, and a large /usr/local kept every deployment).
MAX_DEPTH = 256

# what opening a users' directory fails with when there is none to look into (review21 13:
# any other error, EMFILE or EIO, took a deployment for one without users' data)
_NOTHING_THERE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)

# (device, inode) of the commit's file objects in a directory (relative to the
# deployment's root), by name; empty where the commit has no such directory
CommitFiles = Callable[[str], Mapping[str, tuple[int, int]]]


def users_file(deployment: Path, commit_files: CommitFiles) -> str | None:
    """The first file (relative to ``deployment``) below its users' directories that is
    not one of its commit's objects (``commit_files`` says which they are); a directory
    too deep or not readable to tell, with why; None when there is none. Never follows
    a symlink, never leaves the deployment's filesystem."""
    try:
        root = os.open(deployment, DIR_FLAGS)
    except OSError as exc:
        return None if exc.errno in _NOTHING_THERE else f". (not readable: {exc.strerror})"
    try:
        device = os.fstat(root).st_dev
        for relative in USERS_DIRS:
            found = _walk(root, relative, device, commit_files)
            if found is not None:
                return found
    finally:
        os.close(root)
    return None


def _walk(root: int, relative: str, device: int, commit_files: CommitFiles) -> str | None:
    """Depth first below ``relative``: one descriptor a level, each level's names read
    whole before going down (as fs/sysroot/removal.py walks)."""
    try:
        top = open_below(root, relative)
    except OSError as exc:  # absent, a symlink (into var/, as a prepared tree has), a file
        if exc.errno in _NOTHING_THERE:
            return None
        return f"{relative} (not readable: {exc.strerror})"  # EMFILE, EIO: cannot tell, kept
    try:
        listing = _listing(top)
    except OSError:
        os.close(top)
        return f"{relative} (not readable)"
    frames: list[tuple[int, list[tuple[str, bool]], str]] = [(top, listing, relative)]
    commits: dict[str, Mapping[str, tuple[int, int]]] = {}  # by directory, once asked
    try:
        while frames:
            fd, names, here = frames[-1]
            if not names:
                os.close(frames.pop()[0])
                continue
            if len(frames) > MAX_DEPTH:
                return f"{here} (too deep to look into)"
            name, is_dir = names.pop()
            path = f"{here}/{name}"
            if is_dir:
                try:
                    child = _enter(fd, name, device)
                except OSError as exc:  # EMFILE, EIO: cannot tell, kept (review21 18)
                    return f"{path} (not readable: {exc.strerror})"
                if child is not None:
                    try:
                        listing = _listing(child)
                    except OSError as exc:
                        os.close(child)
                        return f"{path} (not readable: {exc.strerror})"
                    frames.append((child, listing, path))
            elif _written_here(fd, name, partial(_of, commits, commit_files, here)):
                return path
    finally:
        for fd, _, _ in frames:
            os.close(fd)
    return None


def _listing(fd: int) -> list[tuple[str, bool]]:
    with os.scandir(fd) as entries:
        return sorted(((e.name, e.is_dir(follow_symlinks=False)) for e in entries), reverse=True)


def _enter(parent: int, name: str, device: int) -> int | None:
    """The directory ``name`` of ``parent``, unless it is gone (or was swapped for a
    symlink or a file) or another filesystem; OSError for any other failure."""
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in _NOTHING_THERE:
            return None
        raise
    if os.fstat(fd).st_dev != device:
        os.close(fd)
        return None
    return fd


def _written_here(
    parent: int,
    name: str,
    commits: Callable[[], Mapping[str, tuple[int, int]]],
) -> bool:
    """Whether ``name`` of ``parent`` is a regular file that is not the commit's object
    of that name as stored (one link only: no object at all, the commit not asked; an
    mtime other than 0, which every object has: the object edited in place through
    this link, review21 11)."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    if st.st_nlink == 1 or st.st_mtime_ns != 0:
        return True
    return commits().get(name) != (st.st_dev, st.st_ino)


def removal_check(commit_files: CommitFiles) -> Callable[[bytes, int, bytes], bool]:
    """The ``keep`` check of fs/sysroot/removal.py's remove_own_tree for a deployment
    found without users' data: it asks again of each file of its users' directories,
    just before it is unlinked, so that one written since the look is not removed with
    it (review21 8; the window left is a stat and an unlink)."""
    cache: dict[str, Mapping[str, tuple[int, int]]] = {}

    def keep(directory: bytes, parent: int, name: bytes) -> bool:
        here = os.fsdecode(directory)
        if not any(here == d or here.startswith(d + "/") for d in USERS_DIRS):
            return False
        return _written_here(parent, os.fsdecode(name), partial(_of, cache, commit_files, here))

    return keep


def _of(
    cache: dict[str, Mapping[str, tuple[int, int]]], commit_files: CommitFiles, directory: str
) -> Mapping[str, tuple[int, int]]:
    found = cache.get(directory)
    if found is None:
        found = cache[directory] = commit_files(directory)
    return found


def commit_keeps_files_there(repo: Repository, commit: ObjectId) -> list[str]:
    """The users' directories that ``commit`` has as real directories holding files
    (anywhere below, within a bound of trees read): deployed, those files are writable
    hardlinks of the repository's objects (an edit in place writes through into the
    object: review21 12), and what users write beside them stays in the deployment."""
    found = []
    for relative in USERS_DIRS:
        try:
            node = lookup(repo, commit, "/" + relative)
        except SapwoodError:
            continue
        if node.dir is not None and _has_files(repo, node.dir.tree):
            found.append("/" + relative)
    return found


def _has_files(repo: Repository, tree_id: ObjectId, budget: int = 1000) -> bool:
    pending = [tree_id]
    while pending and budget > 0:
        budget -= 1
        tree = repo.read_dirtree(pending.pop())
        if tree.files:
            return True
        pending.extend(entry.tree for _, entry in tree.dirs)
    return bool(pending)  # not all looked at: as if it held some
