"""The prefetch child: the process in which the threads of fs/prefetch_threads.py list a
tree ahead of a scan (fs/prefetch.py starts it and says why), and what goes down its
stdin.

Its command line, as fs/prefetch.py runs it::

    python -I -S fs/prefetch_child.py THREADS MAX_TREE_DEPTH ENTERED ROOT_FD

the number of threads, store's MAX_TREE_DEPTH (it has no store: the standard library
only, and this package's getdents.py and prefetch_threads.py), the directories the scan
had entered, and the tree's root fd (inherited: a duplicate of the scan's). Its stdin, a
socket: first the tree paths the scan skips (:func:`send_skipped`: an 8-byte big-endian
length, then the paths NUL-separated: any size, and not shown by ps as an argument
would be), then a byte a directory the scan enters, TELL_EVERY bytes at a time (so the
scan may be up to TELL_EVERY - 1 directories further than told). It lists until its
stdin ends (the scan stopped or ended: it is killed then anyway) and writes nothing.
"""

from __future__ import annotations

import os
import struct
import sys
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import socket

if __name__ == "__main__":  # python -I -S: sys.path holds the standard library only; the
    # directory holding this package goes after it (nothing there can shadow a module of it)
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fs.prefetch_threads import PrefetchThreads

_SKIP_HEAD = struct.Struct(">Q")  # bytes of the skipped paths that follow, NUL-separated
TELL_EVERY = 32  # directories entered that the scan tells at once (fs/prefetch.py)


def send_skipped(ours: socket.socket, skip: frozenset[bytes], wait: float) -> bool:
    """The skipped tree paths, down the child's stdin before anything else; False if it
    does not take them within ``wait`` seconds."""
    import socket

    paths = b"\0".join(sorted(skip))
    try:
        ours.settimeout(wait)
        ours.sendall(_SKIP_HEAD.pack(len(paths)) + paths, socket.MSG_NOSIGNAL)
    except OSError:  # socket.timeout too
        return False
    return True


def _read_skipped() -> frozenset[bytes] | None:
    """The skipped tree paths from stdin (:func:`send_skipped`); None if it ends first."""
    head = _read_exactly(_SKIP_HEAD.size)
    paths = None if head is None else _read_exactly(_SKIP_HEAD.unpack(head)[0])
    if paths is None:
        return None
    return frozenset(paths.split(b"\0")) if paths else frozenset()


def _read_exactly(size: int) -> bytes | None:
    """``size`` bytes of stdin; None if it ends first."""
    got = b""
    while len(got) < size:
        more = os.read(0, size - len(got))
        if not more:
            return None
        got += more
    return got


def _told_so_far() -> int | None:
    """The directories the scan entered while this process started (its bytes waiting
    on stdin, read without waiting); None if stdin ended. Cold, an interpreter takes a
    while to start, and the scan goes on meanwhile (13-72 directories on the /usr/share
    farm): the threads must know it is past those, or their first listings, of the
    directories it just read, look warm and stop them (PrefetchThreads: _WARM_STOP)."""
    told = 0
    os.set_blocking(0, False)
    try:
        while more := os.read(0, 1 << 16):
            told += len(more)
    except BlockingIOError:
        pass
    else:
        return None
    finally:
        os.set_blocking(0, True)
    return told


def main(argv: list[str]) -> NoReturn:
    """List the tree in threads, told of the scan's progress by a byte a directory on
    stdin, until stdin ends; never returns."""
    threads, max_depth, entered, root_fd = (int(word) for word in argv[1:5])
    skip = _read_skipped()
    if skip is None:
        os._exit(0)  # the parent is gone
    meanwhile = _told_so_far()
    if meanwhile is None:
        os._exit(0)  # the parent is gone
    lister = PrefetchThreads(root_fd, skip, max_depth, threads, every_inode=True)
    # the directories not told yet too: passed by the scan, none of them counts (a
    # listing too many counts towards _WARM_STOP late; too few, early: stopped on warm
    # directories the scan just read)
    lister.start(entered + meanwhile + TELL_EVERY - 1)
    while told := os.read(0, 4096):
        lister.advance(len(told))
    os._exit(0)  # the threads are daemons: nothing of theirs is worth waiting for


if __name__ == "__main__":
    main(sys.argv)
