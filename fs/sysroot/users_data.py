"""Users' data in a deployment: the files written at run time where a tree that is not
laid out for deployment keeps them (/home, /root, /srv, /opt, /mnt, /usr/local as real
directories of the deployment, docs/deployments.md "/var").

Deploy copies a commit's real /home, /root, /srv, /opt and /mnt (COPIED_DIRS: writable
when booted; /usr/local is below the read-only /usr and stays hardlinks), as /etc is a
copy: an edit in place never writes into the repository's objects (review21 12). A
regular file there is the commit's if its commit has a regular file of that name in
that directory and it has mtime 0 (as every object), the object's size and the object's
bytes (read once, and only when the cheap tests leave nothing else to find); or, in a
deployment made before the copies (session 17) and in /usr/local, if it is the object's
very inode. Anything else (written at run time; a commit's file edited in place, whose
mtime is then the edit's, or whose bytes differ if the mtime was put back; a user's
hardlink of a file of theirs: a ``cp -al`` backup, review21 2) is users' data: a dropped
deployment holding such a file is left on disk (fs/sysroot/retention.py) rather than
removed with what a user keeps in it (attack23 21). A symlink or an empty directory is
not counted (nothing is lost with it).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from fs.sysroot.nofollow import DIR_FLAGS, open_below
from store import ObjectId, Repository, SapwoodError, lookup

# The directories a deploy copies where the commit has them as real directories.
COPIED_DIRS = ("home", "root", "srv", "opt", "mnt")
# The directories a tree laid out as OSTree's links into /var instead (``prepare-tree``).
USERS_DIRS = (*COPIED_DIRS, "usr/local")
# levels below a users' directory looked into (a descriptor each): deeper, kept unexamined.
# No bound on entries: the removal that follows walks them all the same (review21 3: a
# bound counted the commit's own files, and a large /usr/local kept every deployment).
MAX_DEPTH = 256

# what opening a users' directory fails with when there is none to look into (review21 13:
# any other error, EMFILE or EIO, took a deployment for one without users' data)
_NOTHING_THERE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)

_CHUNK = 1 << 20
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class CommitFile:
    """A regular file of a commit, as the repository stores it: its object file's device
    and inode (what a deployment made before the copies, or /usr/local, links), the
    content's size, and ``open``, a descriptor of the object's file of that size (the
    caller closes it; SapwoodError or OSError when it cannot be opened so)."""

    device: int
    inode: int
    size: int
    open: Callable[[], int]
    # the copies found to hold its bytes, as (device, inode, ctime) when they were read:
    # asked again (the removal's check), an unchanged one is not read twice
    copies: set[tuple[int, int, int]] = field(default_factory=set, compare=False)


# The regular files of the commit in a directory (relative to the deployment's root), by
# name; empty where the commit has no such directory. Give the look and the removal's
# check the same CommitFile objects (cache it): a copy read by the one is not read again.
CommitFiles = Callable[[str], Mapping[str, CommitFile]]


def users_file(deployment: Path, commit_files: CommitFiles) -> str | None:
    """The first file (relative to ``deployment``) below its users' directories that is
    not one of its commit's files (``commit_files`` says which they are); a directory
    too deep or not readable to tell, with why; None when there is none. Never follows
    a symlink, never leaves the deployment's filesystem. A first walk reads no file (a
    copy of the commit's name, size and mtime passes), so that a deployment kept for a
    file written at run time costs a walk each time it is looked at again; only when it
    finds nothing does a second one compare each copy's bytes with its object."""
    cheap = _look(deployment, commit_files, read=False)
    return cheap if cheap is not None else _look(deployment, commit_files, read=True)


def _look(deployment: Path, commit_files: CommitFiles, read: bool) -> str | None:
    try:
        root = os.open(deployment, DIR_FLAGS)
    except OSError as exc:
        return None if exc.errno in _NOTHING_THERE else f". (not readable: {exc.strerror})"
    try:
        device = os.fstat(root).st_dev
        for relative in USERS_DIRS:
            found = _walk(root, relative, device, commit_files, read)
            if found is not None:
                return found
    finally:
        os.close(root)
    return None


def _walk(
    root: int, relative: str, device: int, commit_files: CommitFiles, read: bool
) -> str | None:
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
    commits: dict[str, Mapping[str, CommitFile]] = {}  # by directory, once asked
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
            elif _written_here(fd, name, partial(_of, commits, commit_files, here), read):
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
    commits: Callable[[], Mapping[str, CommitFile]],
    read: bool = True,
) -> bool:
    """Whether ``name`` of ``parent`` is a regular file that is not the commit's file of
    that name: an mtime other than 0, which every object and its copies have (an edit in
    place, review21 11, 12: the commit is not asked); no regular file of that name in the
    commit; neither the object's very inode (a deployment made before the copies) nor a
    file of the object's size and, with ``read``, bytes."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    if st.st_mtime_ns != 0:
        return True
    theirs = commits().get(name)
    if theirs is None:
        return True
    if (st.st_dev, st.st_ino) == (theirs.device, theirs.inode):
        return False
    if st.st_size != theirs.size:
        return True
    if not read or (st.st_dev, st.st_ino, st.st_ctime_ns) in theirs.copies:
        return False
    return not _same_bytes(parent, name, st, theirs)


def _same_bytes(parent: int, name: str, st: os.stat_result, theirs: CommitFile) -> bool:
    """Whether ``name`` (stat ``st``) holds the bytes of the object ``theirs``, read
    without changing since ``st`` (its ctime: a write, a chmod or a utime changes it).
    A file gone meanwhile holds nothing to keep (True); one that cannot be read, or an
    object that cannot be opened, cannot be told from users' data (False: kept)."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
            return False  # swapped since the stat: kept, asked again next time
        try:
            theirs_fd = theirs.open()
        except (SapwoodError, OSError):
            return False
        try:
            same = _equal(fd, theirs_fd, st.st_size)
        finally:
            os.close(theirs_fd)
        if not same or os.fstat(fd).st_ctime_ns != st.st_ctime_ns:
            return False
    except OSError:
        return False
    finally:
        os.close(fd)
    theirs.copies.add((st.st_dev, st.st_ino, st.st_ctime_ns))
    return True


def _equal(fd: int, other: int, size: int) -> bool:
    """Whether the first ``size`` bytes of the two files are the same (and neither is
    longer than ``size``)."""
    done = 0
    while done < size:
        want = min(_CHUNK, size - done)
        mine = os.pread(fd, want, done)
        if not mine or mine != os.pread(other, want, done):
            return False
        done += len(mine)
    return os.pread(fd, 1, size) == b"" and os.pread(other, 1, size) == b""


def removal_check(commit_files: CommitFiles) -> Callable[[bytes, int, bytes], bool]:
    """The ``keep`` check of fs/sysroot/removal.py's remove_own_tree for a deployment
    found without users' data: it asks again of each file of its users' directories,
    just before it is unlinked, so that one written since the look is not removed with
    it (review21 8; the window left is a stat and an unlink). A copy the look read is
    not read again unless it changed since (its ctime)."""
    cache: dict[str, Mapping[str, CommitFile]] = {}

    def keep(directory: bytes, parent: int, name: bytes) -> bool:
        here = os.fsdecode(directory)
        if not any(here == d or here.startswith(d + "/") for d in USERS_DIRS):
            return False
        return _written_here(parent, os.fsdecode(name), partial(_of, cache, commit_files, here))

    return keep


def _of(
    cache: dict[str, Mapping[str, CommitFile]], commit_files: CommitFiles, directory: str
) -> Mapping[str, CommitFile]:
    found = cache.get(directory)
    if found is None:
        found = cache[directory] = commit_files(directory)
    return found


def commit_keeps_files_there(repo: Repository, commit: ObjectId) -> list[str]:
    """The users' directories that ``commit`` has as real directories holding regular
    files (anywhere below, within a bound of trees read; a symlink, as Debian's
    /usr/local/man, is nothing to edit nor to keep): deployed, they are the deployment's
    own (copies, or below the read-only /usr), and what users write there stays in that
    deployment, never shared with the next."""
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
        headers = repo.read_file_headers([file_id for _, file_id in tree.files])
        if any(not header.is_symlink for header, _ in headers):
            return True
        pending.extend(entry.tree for _, entry in tree.dirs)
    return bool(pending)  # not all looked at: as if it held some
