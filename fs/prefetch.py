"""Reading a tree's directories ahead of a scan, when they come from the disk.

A scan (fs/scan.py) walks one directory at a time: list it, lstat each entry, go on.
When the tree's metadata is not in memory, every directory listing and every block of
inodes is a read that the walk waits for, one after the other: a cold re-commit of a
``checkout -U -H`` farm of /usr/share (3,302 directories, 54,588 entries) spent 3.7 s
of 7.6 s in getdents alone, the disk idle but for one request at a time. OSTree's
commit walks the same way.

A :class:`Prefetcher` has a few threads list and lstat the directories of the tree,
depth first in name order as the scan goes, so that the disk serves many requests at
once and the scan finds what it asks for in memory (the walk alone, cold: 7.4 s -> 1.4 s
with 16 threads, session 7). Its parts:

- this module, the scan's side: when to start, starting the child, telling it of the
  scan's progress, stopping it;
- fs/prefetch_threads.py: the threads and what they read (never through a symlink,
  never a skipped path, never deeper than a commit nests, at most _AHEAD directories
  ahead of the scan, ending once the tree ahead proves to be in memory);
- fs/getdents.py: getdents64 through ctypes, and its batches' parser;
- fs/prefetch_child.py: the child process the threads run in, and its stdin.

The threads run in a child process (``python -I -S fs/prefetch_child.py``: the standard
library only, spawned, never forked from a process holding LMDB and threads), so they
never take the interpreter's lock from the scan: in the scan's own process, every call
that lets go of the GIL (an lstat of the scan, an open or getdents of a thread) was a
hand-off between a dozen threads on two cores. Cold farm re-commit, nice -10, load
3-3.5, 4 runs each, caches dropped: threads in the process 1.75-2.10 s, in the child
1.46-1.60 s (session 8's code: 2.04-2.80). The child is told the scan's progress by a
byte a directory entered down its stdin, sent TELL_EVERY at a time (a socket, sent to
without waiting and without SIGPIPE: a child gone or behind never holds nor kills the
scan; what the socket cannot take yet goes with a later send, so the child never loses
count; a send a directory woke the child 3,302 times on the /usr/share farm, 4-9% of a
cold re-commit's samples under load, and told it nothing it needed: it may run
fs/prefetch_threads.py's _AHEAD, 4,096 directories, ahead), is killed and reaped
by :meth:`Prefetcher.stop`, and the threads list in the scan's process if it cannot be
started (a program that embeds Python has no interpreter to start it with).

It is started only once the scan's own listings have waited for the disk
(:meth:`Prefetcher.listing`: the blocks the scan's thread read while listing, from
getrusage's ru_inblock; a few blocks of the index or of the objects' listing read from
the disk do not count): on a warm tree it would only compete with the scan for the
interpreter.

It never holds the scan up: :meth:`Prefetcher.stop` (when the walk ends, done, failed
or interrupted) waits at most _STOP_WAIT seconds, for the threads of this process
(fs/prefetch_threads.py: one held by a filesystem that hangs is left behind) or for the
child, sent SIGKILL: one held by such a filesystem dies when the call returns, holding
nothing of the scan's but its own duplicate of the root fd.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from fs import prefetch_child
from fs.prefetch_threads import PrefetchThreads, blocks_read
from store import MAX_TREE_DEPTH

if TYPE_CHECKING:
    import socket
    import subprocess

log = logging.getLogger(__name__)
_THREADS = 4  # requests in flight (the child's, cold farm: 4 1.46-1.60 s, 8 1.60-2.01)
_COLD_LISTINGS = 2  # listings of the scan that read the disk before the threads start
_STOP_WAIT = 1.0  # seconds stop() waits for the threads or the child, all together
_DOTS = memoryview(b"." * (1 << 16))  # the progress bytes one send carries, at most

_T = TypeVar("_T")


def _child_command() -> list[str] | None:
    """The child's command line but its arguments (fs/prefetch_child.py); None where
    this process was not started by an interpreter's command line (a program that
    embeds Python: sys.executable is that program), to list in threads here."""
    if not os.path.basename(sys.executable).startswith("python"):
        return None
    if not prefetch_child.__file__:
        return None
    return [sys.executable, "-I", "-S", prefetch_child.__file__]


class Prefetcher:
    """Lists a tree's directories ahead of a scan once the scan reads from the disk."""

    def __init__(self, root_fd: int, skip: frozenset[bytes] = frozenset()) -> None:
        """``root_fd``: the scan's fd of the tree's root (duplicated when started);
        ``skip``: the tree paths (b"/a/b") the scan leaves out, never listed."""
        self._root_fd = root_fd
        self._skip = skip
        self._max_depth = MAX_TREE_DEPTH
        self._cold_listings = 0
        self._entered = 0  # directories the scan entered before it started
        self._started = False
        self._child: subprocess.Popen[bytes] | None = None  # the lister, once started
        self._progress: socket.socket | None = None  # its stdin: a byte a directory entered
        self._unsent = 0  # directories entered that the child has not been sent yet
        self._threads: PrefetchThreads | None = None  # listing here: no child

    def listing(self, list_directory: Callable[[], _T]) -> _T:
        """Run the scan's listing of the next directory it enters (``list_directory``):
        counts the directory, and starts listing ahead once _COLD_LISTINGS listings
        have read from the disk."""
        if self._started:
            if self._progress is not None:
                self._tell_child()
            elif self._threads is not None:
                self._threads.advance(1)
            return list_directory()
        self._entered += 1
        before = blocks_read()
        listed = list_directory()
        if blocks_read() != before:
            self._cold_listings += 1
            if self._cold_listings == _COLD_LISTINGS:
                self._start()
        return listed

    def stop(self) -> None:
        """Stop listing ahead, waiting at most _STOP_WAIT seconds: a thread still held
        by its filesystem then ends by itself; a child still held so is killed and left
        to end."""
        if self._child is not None:
            self._stop_child(self._child)
        if self._threads is not None:
            self._threads.stop(_STOP_WAIT)

    def _start(self) -> None:
        self._started = True
        command = _child_command()
        if command is not None and self._spawn(command):
            return
        self._threads = PrefetchThreads(self._root_fd, self._skip, self._max_depth, _THREADS)
        self._threads.start(self._entered)

    # ----- the child process ------------------------------------------------------------
    def _spawn(self, command: list[str]) -> bool:
        """Start the child that lists the tree (fs/prefetch_child.py) with ``command``;
        False if it cannot be started (the threads list it in this process then)."""
        import socket
        import subprocess

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
        arguments = [str(_THREADS), str(self._max_depth), str(self._entered), str(root)]
        try:
            child = subprocess.Popen(
                [*command, *arguments],
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
        if not prefetch_child.send_skipped(ours, self._skip, _STOP_WAIT):
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
        """One more directory entered: every TELL_EVERY, a byte each down the child's
        stdin, never waiting. What the socket does not take then (its buffer full: each
        pending send holds ~770 bytes of it, so a few hundred while the child is
        descheduled) is carried over to the next send, never dropped: a child that lost
        count would wait for a scan already past, or list behind it (review12 2). A child
        gone is ignored."""
        self._unsent += 1
        if self._unsent < prefetch_child.TELL_EVERY:
            return
        import socket

        assert self._progress is not None
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
