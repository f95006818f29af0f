"""The index pages a mount daemon keeps mapped: bounded, so that its memory is.

A walk touches much of the LMDB index (a million files: 300 MB of it), and every page
it maps counts in the daemon's resident memory although it is page cache: a record
read at random maps about 40 KiB (the kernel maps the folio around a fault), a tree of
200 entries about 100 KiB. Past a budget, the daemon lets go of them: madvise
(MADV_DONTNEED) on the repository's read-only shared mappings drops the page table
entries and nothing else; the pages stay in the page cache, and the next read of them
maps them again (a minor fault). LMDB maps its data file read-only (sapwood never
opens it with MDB_WRITEMAP), so nothing is lost, even under an open transaction.

The view calls this every few dozen records it reads (mountd/view.py: on the request
path, because a walk keeps the daemon's loop too busy for a timer to run in time). A
drop costs about a millisecond, and the pages mapped again afterwards a few
microseconds a record: walking a million files costs the daemon about 8 s of CPU more
than keeping the whole index mapped would, and its memory stays under 100 MiB.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)
# Index pages kept mapped, beyond the file-backed memory the daemon holds once mounted
# (its libraries); SAPWOOD_MOUNT_INDEX_MIB sets another budget, in MiB.
INDEX_MAP_BUDGET = 40 << 20
INDEX_BUDGET_ENV = "SAPWOOD_MOUNT_INDEX_MIB"
_MADV_DONTNEED = 4  # linux/mman.h
_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


class MappedIndexBound:
    """Called now and then (with nothing to say): drops the repository's mapped pages
    once the process's file-backed resident memory has grown ``budget`` bytes past
    what it was when this was made."""

    def __init__(self, repository: Path, budget: int | None = None) -> None:
        self._under = os.path.realpath(repository).rstrip("/") + "/"
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)  # read anew
        if budget is None:
            chosen = os.environ.get(INDEX_BUDGET_ENV, "")
            budget = int(chosen) << 20 if chosen.isdigit() else INDEX_MAP_BUDGET
        self.limit = self.mapped_bytes() + budget
        self.drops = 0
        self._usable = True

    def __call__(self) -> None:
        if not self._usable or self.mapped_bytes() <= self.limit:
            return
        for start, length in self.repository_maps():
            if _libc.madvise(start, length, _MADV_DONTNEED) != 0:
                error = os.strerror(ctypes.get_errno())
                log.warning("cannot drop the index's mapped pages (%s): left mapped", error)
                self._usable = False
        self.drops += 1

    def mapped_bytes(self) -> int:
        """The process's resident file-backed memory (libraries and the index map)."""
        return int(os.pread(self._statm, 128, 0).split()[2]) * self._page

    def repository_maps(self) -> list[tuple[int, int]]:
        """(address, length) of each read-only shared mapping of a file in the
        repository: the index's data file. Read afresh each time: a reopened index is
        mapped elsewhere."""
        found = []
        with open("/proc/self/maps", "rb") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) < 6 or fields[1] != b"r--s":
                    continue
                if not os.fsdecode(fields[5].rstrip(b"\n")).startswith(self._under):
                    continue
                start, end = (int(address, 16) for address in fields[0].split(b"-"))
                found.append((start, end - start))
        return found
