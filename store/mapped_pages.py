"""The pages of a memory-mapped file this process holds (the LMDB index's data.mdb):
where they are mapped, and letting go of them, so that a process that reads a large index
does not count every page it has read as its own memory (Index.release_pages)."""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any

_MADV_DONTNEED = 4  # linux/mman.h


def mapped_ranges(path: str) -> list[tuple[int, int]]:
    """(start, length) of this process's mappings of ``path``, from /proc/self/maps."""
    ranges: list[tuple[int, int]] = []
    try:
        with open("/proc/self/maps", "rb") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].rstrip(b"\n") == os.fsencode(path):
                    low, high = (int(part, 16) for part in fields[0].split(b"-"))
                    ranges.append((low, high - low))
    except OSError:
        return []
    return ranges


def madvise_dontneed(start: int, length: int) -> None:
    """Let go of these pages of a file mapping: they stay in the page cache and are
    mapped again on the next read (a read-only shared map loses nothing)."""
    libc = _libc()
    if libc is not None:
        libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), _MADV_DONTNEED)


@functools.cache
def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
