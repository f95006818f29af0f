"""The index pages a mount daemon keeps mapped: bounded, so that its memory is.

A walk touches much of the LMDB index (a million files: 300 MB of it), and every page
it maps counts in the daemon's resident memory although it is page cache: a record
read at random maps about 40 KiB (the kernel maps the folio around a fault), a tree of
200 entries about 100 KiB. Past a budget, the daemon lets go of them
(Repository.release_index_pages: madvise DONTNEED on the read-only map drops the page
table entries and nothing else; the pages stay in the page cache, and the next read of
them maps them again, a minor fault). It needs no transaction closed, unlike closing
and reopening the map, which also churned malloc (3 MiB more anonymous memory after a
few hundred reopens).

The view calls this every few dozen records it reads (mountd/records.py: on the request
path, because a walk keeps the daemon's loop too busy for a timer to run in time). A
drop costs about a millisecond, and the pages mapped again afterwards a few
microseconds a record: walking a million files costs the daemon about 8 s of CPU more
than keeping the whole index mapped would, and its memory stays under 100 MiB.
"""

from __future__ import annotations

import os

from store import Repository

# Index pages kept mapped, beyond the file-backed memory the daemon holds once mounted
# (its libraries); SAPWOOD_MOUNT_INDEX_MIB sets another budget, in MiB.
INDEX_MAP_BUDGET = 40 << 20
INDEX_BUDGET_ENV = "SAPWOOD_MOUNT_INDEX_MIB"


class MappedIndexBound:
    """Called now and then (with nothing to say): lets go of the repository's mapped
    index pages once the process's file-backed resident memory has grown ``budget``
    bytes past what it was when this was made."""

    def __init__(self, repo: Repository, budget: int | None = None) -> None:
        self.repo = repo
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)  # read anew
        if budget is None:
            chosen = os.environ.get(INDEX_BUDGET_ENV, "")
            # ASCII digits only: isdigit() alone takes "²", which int() refuses
            budget = (
                int(chosen) << 20 if chosen.isascii() and chosen.isdigit() else INDEX_MAP_BUDGET
            )
        self.limit = self.mapped_bytes() + budget
        self.drops = 0

    def __call__(self) -> None:
        if self.mapped_bytes() > self.limit:
            self.repo.release_index_pages()
            self.drops += 1

    def mapped_bytes(self) -> int:
        """The process's resident file-backed memory (libraries and the index map)."""
        return int(os.pread(self._statm, 128, 0).split()[2]) * self._page
