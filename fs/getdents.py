"""Reading a directory a batch of entries at a time: libc's getdents64 through ctypes,
and a parser of the batch it fills (linux_dirent64 records).

The scan's prefetch threads (fs/prefetch_threads.py) read directories so, not with
scandir: scandir lets go of the interpreter once an entry, and 16 threads doing so, with
an lstat an entry, made a convoy on the GIL with the scan's own thread (cold re-commit
of a /usr/share farm, session 9, load 3-5: 50,000-240,000 context switches, CPU 1.7-3.0 s
against 1.5 without threads). A getdents64 call lets go of it once a 32 KiB batch.

The standard library only: the prefetch child (fs/prefetch_child.py) imports this.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator
from typing import Any

_BATCH = 1 << 15  # bytes of directory entries a getdents64 call reads
DT_UNKNOWN, DT_DIR = 0, 4  # d_type of a linux_dirent64
DIRENT = struct.Struct("=QqHB")  # d_ino, d_off, d_reclen, d_type; then the name, NUL-ended


def dirents(batch: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(inode, type, name) of each linux_dirent64 in one getdents64 batch; a record
    too short to hold a name ends the batch (the kernel writes none: attack16 1)."""
    unpack, size, at = DIRENT.unpack_from, DIRENT.size, 0
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


class Getdents:
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


_loaded: list[Getdents | None] = []


def libc_getdents() -> Getdents | None:
    """libc's getdents64 (glibc 2.30 and later), loaded once; None without it."""
    if not _loaded:
        _loaded.append(_load())
    return _loaded[0]


def _load() -> Getdents | None:
    try:
        import ctypes

        function = ctypes.CDLL(None, use_errno=True).getdents64
    except (ImportError, OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
    function.restype = ctypes.c_ssize_t
    return Getdents(function)
