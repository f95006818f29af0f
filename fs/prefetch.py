"""Reading a tree's directories ahead of a scan, when they come from the disk.

A scan (fs/scan.py) walks one directory at a time: list it, lstat each entry, go on.
When the tree's metadata is not in memory, every directory listing and every block of
inodes is a read that the walk waits for, one after the other: a cold re-commit of a
``checkout -U -H`` farm of /usr/share (3,302 directories, 54,588 entries) spent 3.7 s
of 7.6 s in getdents alone, the disk idle but for one request at a time. OSTree's
commit walks the same way.

A :class:`Prefetcher` lists and lstats the directories of the tree in a few threads of
a child process, depth first in name order as the scan goes, so that the disk serves
many requests at once and the scan finds what it asks for in memory (the walk alone,
cold: 7.4 s -> 1.4 s with 16 threads, session 7).

The threads run in a child process (this file run as a script, ``python -I -S``: the
standard library only, spawned, never forked from a process holding LMDB and threads),
so they never take the interpreter's lock from the scan: in the scan's own process,
every call that lets go of the GIL (an lstat of the scan, an open or getdents of a
thread) was a hand-off between a dozen threads on two cores. Cold farm re-commit,
nice -10, load 3-3.5, 4 runs each, caches dropped: threads in the process 1.75-2.10 s,
in the child 1.46-1.60 s (session 8's code: 2.04-2.80). The child is told the scan's
progress by a byte a directory entered down its stdin (a socket, sent to without
waiting and without SIGPIPE: a child gone or behind never holds nor kills the scan;
what the socket cannot take yet goes with a later send, so the child never loses count),
is killed and reaped by :meth:`Prefetcher.stop`, and lists in threads of the scan's
process if it cannot be started (tests also list in threads, to watch them).

A thread reads a directory with getdents64 (through ctypes, a 32 KiB batch a call), not
scandir: scandir lets go of the interpreter once an entry, and 16 threads doing
so, with an lstat an entry, made a convoy on the GIL with the scan's own thread (cold
re-commit of the farm above, session 9, load 3-5: 50,000-240,000 context switches, CPU
1.7-3.0 s against 1.5 without threads). Of the entries it lstats one inode in each
256 (``(inode - 1) >> 8``): on ext4 a missed inode reads the inode-table blocks of
its aligned 32-block region (inode_readahead_blks, 16 inodes a block: 512 inodes),
aligned on the disk's block numbers, not on inode numbers, so a 256-inode window
(16 blocks, aligned within its group's table) lies whole in one region, and every
region holding one of the tree's windows is read, whatever the table's offset on
the disk; windows of 512 straddled two regions, and one of them was read only if an
lstat fell in it (review12 3). The disk reads are the same, the calls some hundred
times fewer; the directory blocks, one request each on ext4 (htree readdir reads no
block ahead), are 85% of the requests. On other filesystems (XFS's inode chunks of
64, btrfs's inodes in its tree) one lstat reads few of the others: the scan waits
for those, a matter of speed only.

It is started only once the scan's own listings have waited
for the disk (:meth:`Prefetcher.listing`: the blocks the scan's thread read while
listing, from getrusage's ru_inblock; a few blocks of the index or of the objects'
listing read from the disk do not count): on a warm tree it would only compete with
the scan for the interpreter. It keeps at most
_AHEAD directories ahead of the scan, so that what it reads is still in memory when
the scan gets there. Its threads end once _WARM_STOP of their listings in a row have
read nothing from the disk: the tree ahead is in memory after all (a tree that was
only partly evicted: a few cold directories started them), and listing it again would
only compete with the scan for the interpreter (a warm 6,000-file farm re-commit with
the threads running all along: 71 -> 100 ms of CPU). They start at the root, behind
the scan: the directories it had entered by then are warm because it just read them,
and say nothing of the tree ahead, so the first that many listings do not count (they
stopped the threads on a tree warm for its first 64 directories and cold after, which
was then read one request at a time: review11).

What it reads is thrown away: the scan opens, checks and reads everything itself, as
fs/scan.py says, so nothing here can change what a commit records. It never follows
a symlink: each directory is opened one component at a time from a duplicate of the
scan's root fd, with O_NOFOLLOW | O_DIRECTORY, and anything that fails (swapped,
removed, unreadable) is skipped, and so is every path the commit skips (a skipped
mount that hangs, /proc or /sys of a sysroot, is never listed), and so is anything
deeper than a commit may nest (MAX_TREE_DEPTH): a directory opened from the root costs
an open a level, and a hostile chain N deep would cost N*N/2. It holds at most two
fds a thread and its root fd, and the paths of the directories it has seen and not
yet listed (a few MB for a tree of 50,000 directories, and only while the tree comes
from the disk).

Its threads never hold the scan up: :meth:`Prefetcher.stop` (when the walk ends, done,
failed or interrupted) waits for them at most _STOP_WAIT seconds. A thread stops at the
next entry it lists; one that waits on a filesystem (an NFS or FUSE mount that hangs)
is left behind, a daemon, and the last one out closes the fd they share. The child is
sent SIGKILL and waited for as long; one held by such a filesystem dies when the call
returns, holding nothing of the scan's but its own duplicate of the root fd.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import socket
    import subprocess

if __name__ == "__main__":  # the child (python -I -S fs/prefetch.py): no store; its
    MAX_TREE_DEPTH = 0  # parent gives the depth on its command line
else:  # imported: a failure to import store is an error, never a silent depth of 0
    from store import MAX_TREE_DEPTH

log = logging.getLogger(__name__)
_THREADS = 4  # requests in flight (the child's, cold farm: 4 1.46-1.60 s, 8 1.60-2.01)
_AHEAD = 4096  # directories listed ahead of the scan, at most
_COLD_LISTINGS = 2  # listings of the scan that read the disk before the threads start
_STOP_WAIT = 1.0  # seconds stop() waits for the threads, all together
_WARM_STOP = 64  # the threads' listings in a row that read nothing: the rest is in memory
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_BATCH = 1 << 15  # bytes of directory entries a getdents64 call reads
_WINDOW_BITS = 8  # inodes lstat'ed: one a 256, half ext4's inode readahead (module docstring)

_Path = tuple[bytes, ...]  # a directory's names below the root
_T = TypeVar("_T")


def _blocks_read() -> int:
    """512-byte blocks this thread has read from the disk so far."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_inblock


class Prefetcher:
    """Lists a tree's directories ahead of a scan once the scan reads from the disk."""

    def __init__(
        self, root_fd: int, skip: frozenset[bytes] = frozenset(), max_depth: int | None = None
    ) -> None:
        """``root_fd``: the scan's fd of the tree's root (duplicated when started);
        ``skip``: the tree paths (b"/a/b") the scan leaves out, never listed here;
        ``max_depth``: store's MAX_TREE_DEPTH (given to the child, which has no store)."""
        if max_depth is None:
            max_depth = MAX_TREE_DEPTH
        self._root_fd = root_fd
        self._skip = skip
        self._max_depth = max_depth
        self._child: subprocess.Popen[bytes] | None = None  # the lister, once started
        self._progress: socket.socket | None = None  # its stdin: a byte a directory entered
        self._unsent = 0  # directories entered that the child has not been sent yet
        self._done: Callable[[int], object] | None = None  # told the count when all ended
        self._cold_listings = 0
        self._started = False
        self._lock = threading.Condition()
        self._stack: list[_Path] = []  # to list, the next one last
        self._busy = 0  # threads listing a directory
        self._listed = 0  # directories listed (or skipped) so far
        self._warm_run = 0  # the threads' last listings in a row that read nothing
        self._passed = 0  # directories the scan had entered when the threads started
        self._entered = 0  # directories the scan entered so far
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._alive = 0  # threads started and not ended
        self._own_fd: int | None = None
        self._windows: set[int] = set()  # (inode - 1) >> _WINDOW_BITS, the inodes lstat'ed

    def listing(self, list_directory: Callable[[], _T]) -> _T:
        """Run the scan's listing of the next directory it enters (``list_directory``):
        counts the directory, and starts the threads once _COLD_LISTINGS listings have
        read from the disk."""
        if self._started:
            if self._progress is not None:
                self._tell_child()
            else:
                self._advance(1)
            return list_directory()
        self._entered += 1
        before = _blocks_read()
        listed = list_directory()
        if _blocks_read() != before:
            self._cold_listings += 1
            if self._cold_listings == _COLD_LISTINGS:
                self._start()
        return listed

    def _advance(self, entered: int) -> None:
        """The scan entered ``entered`` more directories."""
        with self._lock:
            self._entered += entered
            self._lock.notify_all()

    def _start(self) -> None:
        self._started = True
        if _IN_A_CHILD and self._spawn():
            return
        self._start_threads()

    def _start_threads(self) -> None:
        self._passed = self._entered
        try:
            self._own_fd = os.dup(self._root_fd)
        except OSError:
            return  # out of fds: the scan goes on without
        self._stack.append(())
        log.debug("the tree is read from the disk: listing it ahead in %d threads", _THREADS)
        for _ in range(_THREADS):
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

    def stop(self) -> None:
        """End the threads and let go of the fd, waiting at most _STOP_WAIT seconds:
        a thread still held by its filesystem then ends (and closes the fd) by itself;
        a child still held so is killed and left to end."""
        if self._child is not None:
            self._stop_child(self._child)
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        deadline = time.monotonic() + _STOP_WAIT
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        with self._lock:
            self._release()

    # ----- the child process ------------------------------------------------------------
    def _spawn(self) -> bool:
        """Start the child that lists the tree (see the module's docstring); False if
        it cannot be started (the threads list it in this process then)."""
        import socket
        import subprocess

        if not os.path.basename(sys.executable).startswith("python") or not __file__:
            return False  # not an interpreter's command line (an embedding program)
        argv = [sys.executable, "-I", "-S", __file__, str(_THREADS), str(self._max_depth)]
        argv += [str(self._entered)]
        try:
            ours, theirs = socket.socketpair()  # sent to with MSG_NOSIGNAL: never a SIGPIPE
        except OSError:
            return False
        try:
            root = os.dup(self._root_fd)
        except OSError:
            ours.close()
            theirs.close()
            return False
        try:
            child = subprocess.Popen(
                [*argv, str(root)],
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(root,),
            )
        except (OSError, ValueError):
            log.debug("cannot start the lister, listing in threads", exc_info=True)
            ours.close()
            return False
        finally:
            os.close(root)
            theirs.close()
        if not _send_skipped(ours, self._skip):
            log.debug("the lister did not take the skipped paths, listing in threads")
            ours.close()
            child.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(_STOP_WAIT)
            return False
        self._child, self._progress = child, ours
        log.debug("the tree is read from the disk: listing it ahead in process %d", child.pid)
        return True

    def _tell_child(self) -> None:
        """One more directory entered: a byte down the child's stdin, never waiting.
        What the socket does not take now (its buffer full: each pending send holds
        ~770 bytes of it, so a few hundred while the child is descheduled) is carried
        over to the next send, never dropped: a child that lost count would wait for a
        scan already past, or list behind it (review12 2). A child gone is ignored."""
        import socket

        assert self._progress is not None
        self._unsent += 1
        try:
            sent = self._progress.send(
                _DOTS[: min(self._unsent, len(_DOTS))], socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
            )
        except (BlockingIOError, BrokenPipeError, ConnectionError):
            return
        except OSError:
            log.debug("the lister's socket failed", exc_info=True)
            return
        self._unsent -= sent

    def _stop_child(self, child: subprocess.Popen[bytes]) -> None:
        """Kill the child and reap it, waiting at most _STOP_WAIT seconds (one held by
        a filesystem that hangs dies when that returns: it changes nothing anyway)."""
        import subprocess

        self._child = None
        if self._progress is not None:
            with contextlib.suppress(OSError):
                self._progress.close()
            self._progress = None
        child.kill()
        try:
            child.wait(_STOP_WAIT)
        except subprocess.TimeoutExpired:
            log.debug("the lister %d is held by its filesystem: left to end", child.pid)

    def _release(self) -> None:
        """Close the fd once stopped and no thread is left (called holding the lock)."""
        if self._stopping and not self._alive and self._own_fd is not None:
            os.close(self._own_fd)
            self._own_fd = None

    def _work(self) -> None:
        try:
            while (path := self._next()) is not None:
                subdirs: list[_Path] = []
                before = _blocks_read()
                try:
                    self._list(path, subdirs)
                except Exception:  # never a traceback: what it reads is thrown away anyway
                    log.debug("listing ahead failed at %r", path, exc_info=True)
                finally:
                    warm = _blocks_read() == before
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
                if not self._alive and self._done is not None:
                    self._done(self._listed)

    def _next(self) -> _Path | None:
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

    def _list(self, path: _Path, subdirs: list[_Path]) -> None:
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
        way: by getdents64 itself where libc has it (_Getdents), else by scandir."""
        getdents = _getdents()
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
        window of 256 is lstat'ed (ext4 reads its neighbours with it: module docstring)."""
        windows = self._windows
        for inode, kind, name in _dirents(batch):
            if kind == _DT_DIR:
                if name not in (b".", b".."):
                    yield name
                continue
            if kind == _DT_UNKNOWN:  # a filesystem that does not say: ask
                try:
                    if stat.S_ISDIR(os.lstat(name, dir_fd=fd).st_mode):
                        yield name
                except OSError:
                    pass
                continue
            window = (inode - 1) >> _WINDOW_BITS  # inode 1 is the first of a table
            if window not in windows:
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

    def _open(self, path: _Path) -> int | None:
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


_IN_A_CHILD = True  # list in a child process (tests list in threads to watch them)
_DOTS = memoryview(b"." * (1 << 16))  # the progress bytes one send carries, at most
_DT_UNKNOWN, _DT_DIR = 0, 4  # d_type of a linux_dirent64
_DIRENT = struct.Struct("=QqHB")  # d_ino, d_off, d_reclen, d_type; then the name, NUL-ended


def _dirents(batch: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(inode, type, name) of each linux_dirent64 in one getdents64 batch; a record
    too short to hold a name ends the batch (the kernel writes none: attack16 1)."""
    unpack, size, at = _DIRENT.unpack_from, _DIRENT.size, 0
    while at < len(batch):
        inode, _, length, kind = unpack(batch, at)
        if length <= size:
            return
        start = at + size
        end = batch.find(b"\0", start, at + length)
        if end < 0:
            raise ValueError("a directory entry's name without its NUL")
        yield inode, kind, batch[start:end]
        at += length


class _Getdents:
    """libc's getdents64 through ctypes: a thread reads a directory a whole buffer at a
    time, letting go of the interpreter once a buffer rather than once an entry."""

    def __init__(self, function: Any) -> None:
        self._function = function
        self._buffers = threading.local()

    def read(self, fd: int) -> bytes:
        """The next batch of ``fd``'s entries; b"" at the end."""
        import ctypes

        buffer = getattr(self._buffers, "buffer", None)
        if buffer is None or ctypes.sizeof(buffer) != _BATCH:  # tests change _BATCH
            buffer = self._buffers.buffer = ctypes.create_string_buffer(_BATCH)
        got = self._function(fd, buffer, ctypes.sizeof(buffer))  # never more than it holds
        if got < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return ctypes.string_at(buffer, got)


_loaded: list[_Getdents | None] = []


def _getdents() -> _Getdents | None:
    """libc's getdents64 (glibc 2.30 and later), loaded once; None without it."""
    if not _loaded:
        _loaded.append(_load_getdents())
    return _loaded[0]


def _load_getdents() -> _Getdents | None:
    try:
        import ctypes

        function = ctypes.CDLL(None, use_errno=True).getdents64
    except (ImportError, OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
    function.restype = ctypes.c_ssize_t
    return _Getdents(function)


_SKIP_HEAD = struct.Struct(">Q")  # bytes of the skipped paths that follow, NUL-separated


def _send_skipped(ours: socket.socket, skip: frozenset[bytes]) -> bool:
    """The skipped tree paths, down the child's stdin before anything else (not on its
    command line: any size, and not shown by ps); False if it does not take them
    within _STOP_WAIT seconds."""
    import socket

    paths = b"\0".join(sorted(skip))
    try:
        ours.settimeout(_STOP_WAIT)
        ours.sendall(_SKIP_HEAD.pack(len(paths)) + paths, socket.MSG_NOSIGNAL)
    except OSError:  # socket.timeout too
        return False
    return True


def _read_exactly(size: int) -> bytes | None:
    """``size`` bytes of stdin; None if it ends first."""
    got = b""
    while len(got) < size:
        more = os.read(0, size - len(got))
        if not more:
            return None
        got += more
    return got


def _child_main(argv: list[str]) -> None:
    """The child's work: list the tree in threads, told of the scan's progress by a
    byte a directory on stdin, until stdin ends (the parent stopped or ended).

    argv: threads, MAX_TREE_DEPTH, directories the scan had entered, the tree's root fd
    (inherited); stdin: the skipped paths (_send_skipped), then the progress."""
    global _THREADS
    _THREADS, max_depth, entered = int(argv[1]), int(argv[2]), int(argv[3])
    head = _read_exactly(_SKIP_HEAD.size)
    paths = None if head is None else _read_exactly(_SKIP_HEAD.unpack(head)[0])
    if paths is None:
        os._exit(0)  # the parent is gone
    skip = frozenset(paths.split(b"\0")) if paths else frozenset()
    prefetcher = Prefetcher(int(argv[-1]), skip, max_depth)
    prefetcher._entered = entered
    prefetcher._done = lambda listed: os.write(1, b"%d\n" % listed)  # for its tests
    prefetcher._start_threads()
    while told := os.read(0, 4096):
        prefetcher._advance(len(told))
    os._exit(0)  # the threads are daemons: nothing of theirs is worth waiting for


if __name__ == "__main__":
    _child_main(sys.argv)
