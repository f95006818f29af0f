"""The pages of a memory-mapped file this process holds (the LMDB index's data.mdb):
where they are mapped, and letting go of them, so that a process that reads a large index
does not count every page it has read as its own memory (Index.release_pages)."""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

log = logging.getLogger(__name__)
_MADV_DONTNEED = 4  # linux/mman.h


def mapped_ranges(path: str, identity: tuple[int, int] | None = None) -> list[tuple[int, int]]:
    """(start, length) of this process's shared mappings of the file at ``path``.

    ``identity`` (st_dev, st_ino, read when the file was mapped) finds the mapping
    once the file is renamed, replaced or deleted (its directory moved, an index
    rebuilt: /proc/self/maps names it where it is now, or adds " (deleted)"), or
    where its path is written escaped (a newline is "\\012" there); with the inode,
    the path finds it where the device shown differs from stat's (btrfs subvolumes,
    overlayfs). The path alone is the last resort, where no mapping has the inode
    (overlayfs may show a layer's file rather than the one stat sees; 6.18 shows
    the inode, with another device): another repository's index
    may have been renamed to that path since, and taking its map for this one's
    meant madvising its addresses once it was closed, where the heap may be by then
    (review10). Only shared mappings count: madvise(DONTNEED) on one loses nothing,
    on a private one it would discard what the process wrote there."""
    target = os.fsencode(path)
    same: list[tuple[int, int]] = []
    named_only: list[tuple[int, int]] = []
    try:
        with open("/proc/self/maps", "rb") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[1][3:4] == b"s":
                    named = fields[5].rstrip(b"\n") == target
                    if _same_file(fields[3], fields[4], identity, named):
                        same.append(_range(fields[0]))
                    elif named:
                        named_only.append(_range(fields[0]))
    except OSError:
        return []
    ranges = same or named_only
    if not ranges:
        log.debug("%s is not mapped in this process: its pages cannot be let go of", path)
    return ranges


def _range(addresses: bytes) -> tuple[int, int]:
    """(start, length) of a maps line's "low-high" (hex)."""
    low, high = (int(part, 16) for part in addresses.split(b"-"))
    return low, high - low


def _same_file(device: bytes, inode: bytes, identity: tuple[int, int] | None, named: bool) -> bool:
    """Whether a maps line (device "fe:01" in hex, inode, ``named`` at the path) shows
    the file of ``identity``: its inode, and its device or its path."""
    if identity is None or int(inode) != identity[1]:
        return False
    major, _, minor = device.partition(b":")
    return named or (int(major, 16), int(minor, 16)) == (
        os.major(identity[0]),
        os.minor(identity[0]),
    )


def madvise_dontneed(start: int, length: int) -> None:
    """Let go of these pages of a file mapping: they stay in the page cache and are
    mapped again on the next read (a read-only shared map loses nothing)."""
    madvise = _madvise()
    if madvise is not None:
        madvise(start, length, _MADV_DONTNEED)


@functools.cache
def _madvise() -> Any:
    """The C library's madvise, typed (address, length, advice); None without one.
    ctypes is imported here, the first time: ~3 ms of every command's start-up, for a
    call few make."""
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return function
