"""The threads that list a tree's directories ahead of a scan (fs/prefetch.py says when
and why): in the prefetch child (fs/prefetch_child.py), or in the scan's own process
when the child cannot be started.

A few threads list and lstat the tree's directories, depth first in name order as the
scan goes, so that the disk serves many requests at once and the scan finds what it asks
for in memory. A thread reads a directory with getdents64 (fs/getdents.py) and, of the
entries that are not directories, lstats one inode in each 256 (``(inode - 1) >> 8``):
on ext4 a missed inode reads the inode-table blocks of its aligned 32-block region
(inode_readahead_blks, 16 inodes a block: 512 inodes), aligned on the disk's block
numbers, not on inode numbers, so a 256-inode window (16 blocks, aligned within its
group's table) lies whole in one region, and every region holding one of the tree's
windows is read, whatever the table's offset on the disk; windows of 512 straddled two
regions, and one of them was read only if an lstat fell in it (review12 3). The disk
reads are the same, the calls some hundred times fewer; the directory blocks, one
request each on ext4 (htree readdir reads no block ahead), are 85% of the requests. On
other filesystems (XFS's inode chunks of 64, btrfs's inodes in its tree) one lstat
reads few of the others: the scan waits for those, a matter of speed only. Without
getdents64 (another libc) a thread lists with scandir and lstats every entry.

In the prefetch child they lstat every entry (``every_inode``): the window's lstat brings
the inode table into memory, but the scan's own lstat of each entry then still makes the
kernel's in-core inode and dentry, on the scan's core; made by the child, on the other
core, the scan's lstat finds them. Cold re-commit of the /usr/share farm (session 12,
K2): the scan's CPU 2.67 -> 2.05 s (its sys time 1.0 -> 0.55 s), the child's 0.7 ->
1.45 s. In the scan's own process (no child) they keep to the windows: there an lstat
an entry competed with the scan for the interpreter (the convoy fs/getdents.py tells).

They keep at most _AHEAD directories ahead of the scan (told by :meth:`advance`), so that
what they read is still in memory when the scan gets there. They end once _WARM_STOP of
their listings in a row have read nothing from the disk: the tree ahead is in memory
after all (a tree only partly evicted: a few cold directories started them), and
listing it again would only compete with the scan for the interpreter (a warm
6,000-file farm re-commit with the threads running all along: 71 -> 100 ms of CPU).
They start at the root, behind the scan: the directories it had entered by then are
warm because it just read them, and say nothing of the tree ahead, so the first that
many listings do not count (they stopped the threads on a tree warm for its first 64
directories and cold after, which was then read one request at a time: review11).

What they read is thrown away: the scan opens, checks and reads everything itself, so
nothing here can change what a commit records. They never follow a symlink: each
directory is opened one component at a time from a duplicate of the root fd, with
O_NOFOLLOW | O_DIRECTORY, and anything that fails (swapped, removed, unreadable) is
skipped, and so is every path the commit skips (a skipped mount that hangs, /proc or
/sys of a sysroot, is never listed), and so is anything deeper than a commit may nest
(``max_depth``): a directory opened from the root costs an open a level, and a hostile
chain N deep would cost N*N/2. They hold at most two fds a thread and the root's
duplicate, and the paths of the directories seen and not yet listed (a few MB for a
tree of 50,000 directories, and only while the tree comes from the disk).

:meth:`stop` waits for them at most the time it is given. A thread stops at the next
batch of entries it reads (a getdents64 call: up to 32 KiB of entries, ~1,000 names,
of which those a filesystem gives no type are lstat'ed) or, listing with scandir, at its
next entry; one that waits on a filesystem (an NFS or FUSE mount that hangs) is left
behind, a daemon, and the last one out closes the fd they share.

The standard library only: the prefetch child, which has no store, imports this.
"""

from __future__ import annotations

import logging
import os
import resource
import stat
import threading
import time
from collections.abc import Iterator

from fs.getdents import DT_DIR, DT_UNKNOWN, dirents, libc_getdents

log = logging.getLogger(__name__)
_AHEAD = 4096  # directories listed ahead of the scan, at most
_WARM_STOP = 64  # listings in a row that read nothing: the rest is in memory
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_WINDOW_BITS = 8  # inodes lstat'ed: one a 256, half ext4's inode readahead (docstring)

Path = tuple[bytes, ...]  # a directory's names below the root


def blocks_read() -> int:
    """512-byte blocks this thread has read from the disk so far."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_inblock


class PrefetchThreads:
    """Threads listing a tree's directories ahead of a scan, in this process."""

    def __init__(
        self,
        root_fd: int,
        skip: frozenset[bytes],
        max_depth: int,
        threads: int,
        every_inode: bool = False,
    ) -> None:
        """``root_fd``: the tree's root (duplicated by :meth:`start`); ``skip``: the tree
        paths (b"/a/b") the scan leaves out, never listed; ``max_depth``: store's
        MAX_TREE_DEPTH (nothing deeper is listed); ``threads``: how many;
        ``every_inode``: lstat every entry, not one inode a window (module docstring)."""
        self._root_fd = root_fd
        self._window_bits = 0 if every_inode else _WINDOW_BITS
        self._skip = skip
        self._max_depth = max_depth
        self._count = threads
        self._lock = threading.Condition()
        self._stack: list[Path] = []  # to list, the next one last
        self._busy = 0  # threads listing a directory
        self._listed = 0  # directories listed (or skipped) so far
        self._warm_run = 0  # the threads' last listings in a row that read nothing
        self._passed = 0  # directories the scan had entered when the threads started
        self._entered = 0  # directories the scan entered so far
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._alive = 0  # threads started and not ended
        self._own_fd: int | None = None
        self._windows: set[int] = set()  # (inode - 1) >> window bits, the inodes lstat'ed

    def start(self, entered: int) -> None:
        """Start listing from the root, the scan having entered ``entered`` directories
        (none of them counts towards _WARM_STOP)."""
        self._passed = self._entered = entered
        try:
            self._own_fd = os.dup(self._root_fd)
        except OSError:
            return  # out of fds: the scan goes on without
        self._stack.append(())
        log.debug("the tree is read from the disk: listing it ahead in %d threads", self._count)
        for _ in range(self._count):
            thread = threading.Thread(target=self._work, name="sapwood-prefetch", daemon=True)
            with self._lock:
                self._alive += 1
            try:
                thread.start()
            except BaseException:
                with self._lock:
                    self._alive -= 1
                raise
            self._threads.append(thread)

    def advance(self, entered: int) -> None:
        """The scan entered ``entered`` more directories."""
        with self._lock:
            self._entered += entered
            self._lock.notify_all()

    def stop(self, wait: float) -> None:
        """End the threads and let go of the fd, waiting at most ``wait`` seconds for
        them all: a thread still held by its filesystem then ends (and closes the fd)
        by itself."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        deadline = time.monotonic() + wait
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        with self._lock:
            self._release()

    def _release(self) -> None:
        """Close the fd once stopped and no thread is left (called holding the lock)."""
        if self._stopping and not self._alive and self._own_fd is not None:
            os.close(self._own_fd)
            self._own_fd = None

    def _work(self) -> None:
        try:
            while (path := self._next()) is not None:
                subdirs: list[Path] = []
                before = blocks_read()
                try:
                    self._list(path, subdirs)
                except Exception:  # never a traceback: what it reads is thrown away anyway
                    log.debug("listing ahead failed at %r", path, exc_info=True)
                finally:
                    warm = blocks_read() == before
                    with self._lock:
                        if self._listed >= self._passed:  # ahead of where the scan was
                            self._warm_run = self._warm_run + 1 if warm else 0
                        self._busy -= 1
                        self._listed += 1
                        self._stack.extend(reversed(subdirs))
                        self._lock.notify_all()
        finally:
            with self._lock:
                self._alive -= 1
                self._release()

    def _next(self) -> Path | None:
        """The next directory to list, once the scan is near enough; None to end."""
        with self._lock:
            while not self._stopping:
                if self._warm_run >= _WARM_STOP:
                    if self._warm_run == _WARM_STOP:
                        self._warm_run += 1  # said once
                        log.debug("the tree ahead is in memory: no more listing ahead")
                    return None  # leave the interpreter to the scan
                if self._stack and self._listed - self._entered < _AHEAD:
                    self._busy += 1
                    return self._stack.pop()
                if not self._stack and not self._busy:
                    return None  # the whole tree is listed
                self._lock.wait()
            return None

    def _list(self, path: Path, subdirs: list[Path]) -> None:
        """Read the directory ``path`` and the inodes of its entries (what the scan asks
        for next), noting its subdirectories."""
        fd = self._open(path)
        if fd is None:
            return
        try:
            prefix = b"/" + b"".join(name + b"/" for name in path)
            deeper = len(path) <= self._max_depth  # nothing below is ever committed
            for name in self._entries(fd):
                if prefix + name not in self._skip and deeper:
                    subdirs.append((*path, name))
        except OSError:
            return
        finally:
            os.close(fd)
        subdirs.sort()

    def _entries(self, fd: int) -> Iterator[bytes]:
        """The names of the subdirectories of ``fd``, its entries' inodes read on the
        way: by getdents64 where libc has it, else by scandir."""
        getdents = libc_getdents()
        if getdents is None:
            yield from self._scanned(fd)
            return
        while not self._stopping:  # a huge directory is not listed to its end for nothing
            batch = getdents.read(fd)
            if not batch:
                return
            yield from self._parsed(fd, batch)

    def _parsed(self, fd: int, batch: bytes) -> Iterator[bytes]:
        """The subdirectories of one getdents64 batch; of the other entries, one inode a
        window of 256 is lstat'ed (ext4 reads its neighbours with it: module docstring),
        or every one (``every_inode``)."""
        windows, bits = self._windows, self._window_bits
        for inode, kind, name in dirents(batch):
            if kind == DT_DIR:
                if name not in (b".", b".."):
                    yield name
                continue
            if kind == DT_UNKNOWN:  # a filesystem that does not say: ask
                try:
                    if stat.S_ISDIR(os.lstat(name, dir_fd=fd).st_mode):
                        yield name
                except OSError:
                    pass
                continue
            if bits:
                window = (inode - 1) >> bits  # inode 1 is the first of a table
                if window in windows:
                    continue
                windows.add(window)
            try:
                os.lstat(name, dir_fd=fd)
            except OSError:
                continue

    def _scanned(self, fd: int) -> Iterator[bytes]:
        """_entries without getdents64: scandir, and an lstat of every entry."""
        with os.scandir(fd) as listing:
            for entry in listing:
                if self._stopping:
                    return
                try:
                    if entry.is_dir(follow_symlinks=False):
                        yield os.fsencode(entry.name)
                    else:
                        entry.stat(follow_symlinks=False)
                except OSError:
                    continue

    def _open(self, path: Path) -> int | None:
        """An fd of the directory ``path``, opened a name at a time, never through a
        symlink; None if that fails."""
        fd = self._own_fd
        assert fd is not None
        opened: int | None = None
        try:
            for name in path:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                if opened is not None:
                    os.close(opened)
                fd = opened = child
            return opened if opened is not None else os.dup(fd)
        except OSError:
            if opened is not None:
                os.close(opened)
            return None
