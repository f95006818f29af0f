"""The index records a view reads: decoded, kept within bounds, and counted.

Trees (as Listings), directory metadata, file headers, and the stats of a listing's
files in aligned batches are read from the repository on a miss and kept in LRUs
bounded by their entries. Every record read maps pages of the index into the process:
the count lets the daemon let go of them past a budget (``index_hook``, called every
INDEX_CHECK_RECORDS records before the next read; mountd/mapped.py).
"""

from __future__ import annotations

from collections.abc import Callable

from mountd.listing import Listing
from mountd.lru import Lru
from store import (
    CorruptObjectError,
    DirMeta,
    FileHeader,
    FileStat,
    ObjectId,
    Repository,
    SapwoodError,
)

HEADER_BATCH = 32  # file headers read in one index snapshot while listing
# Index records read between two calls of index_hook; a file's record counts one, a
# tree one per _TREE_RECORD_ENTRIES entries. A record read at random maps about 40 KiB
# of the index into the process (the kernel maps the folio around a fault), a tree of
# 200 entries about 100 KiB: 32 records, and a batch, map a few MiB.
INDEX_CHECK_RECORDS = 32
_TREE_RECORD_ENTRIES = 64
_DIRMETAS = 4096  # decoded dirmetas: a tree has few distinct ones
TREE_CACHE_ENTRIES = 1 << 16  # entries of directory listings kept: about 90 bytes each
LARGE_LISTING_SHARE = 4  # a listing of more than budget / this entries is kept aside
HEADER_CACHE_ENTRIES = 1 << 14  # file headers kept for lookups and reads: about 300 bytes
MAX_FILE_SIZE = (1 << 63) - 1  # what st_size (off_t) holds; a record may claim more


class CachedRecords:
    """The records of one repository a view reads, cached, and counted for the
    daemon's index budget (``index_hook``)."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        # Index records read so far: each maps index pages into the process. Every
        # INDEX_CHECK_RECORDS, before the next read, index_hook runs (the daemon lets go
        # of the pages past a budget: mountd/mapped.py).
        self.records_read = 0
        self.index_hook: Callable[[], object] | None = None
        self._next_check = INDEX_CHECK_RECORDS
        # Listings weigh their entries: a budget of entries, however many trees that is.
        self._trees: Lru[ObjectId, Listing] = Lru(TREE_CACHE_ENTRIES, TREE_CACHE_ENTRIES)
        # The last large listing read, kept aside (see _tree), and the entries of other
        # listings read since it was last used.
        self._large: tuple[ObjectId, Listing] | None = None
        self._large_above = TREE_CACHE_ENTRIES // LARGE_LISTING_SHARE
        self._read_since_large = 0
        self._headers: Lru[ObjectId, tuple[FileHeader, int]] = Lru(HEADER_CACHE_ENTRIES)
        self._dirmetas: Lru[ObjectId, DirMeta] = Lru(_DIRMETAS)  # few distinct in a tree
        # Listings' stat batches: a few directories being listed at once.
        self._stat_batches: Lru[tuple[ObjectId, int], list[FileStat | SapwoodError]] = Lru(128)

    def _tree(self, tree_id: ObjectId) -> Listing:
        """A tree's listing, from the caches or read.

        A large listing (more than a LARGE_LISTING_SHARE-th of the LRU's budget) is kept
        aside, the last one read, never in the LRU: in it, one directory of more entries
        than the whole budget evicted everything else, then was evicted by the next small
        tree read, and every lookup in it after that (the kernel asks again for each
        entry whose dentry it let go, and for the directory's ancestors) decoded all of it
        again. A walk of a mount with a 100,000-entry directory took 315 s instead of 57
        (issue 15). Kept aside, it costs its own size beside the budget, and only while
        it is in use: once listings of as many entries as the budget have been read
        since it was last used, the walk has moved on, and it goes (a daemon that kept
        a 100,000-entry listing to the end of the walk held 112 MiB, not 98).

        The one a newer large listing displaces goes into the LRU if it fits there, as
        it did before listings were kept aside (attack12 1): two directories of 20,000
        entries looked into in turn (``diff -r`` of two commits) were otherwise decoded
        at every lookup and every read of a file in them."""
        large = self._large
        if large is not None and large[0] == tree_id:
            self._read_since_large = 0
            return large[1]
        found = self._trees.get(tree_id)
        if found is not None:
            return found
        listing = self._read_tree(tree_id)
        if len(listing) > self._large_above:
            if large is not None and len(large[1]) <= self._trees.budget:
                self._trees.add(large[0], large[1], len(large[1]))  # see below
            self._large, self._read_since_large = (tree_id, listing), 0
            return listing
        self._trees.add(tree_id, listing, max(1, len(listing)))
        self._read_since_large += len(listing)
        if self._read_since_large > TREE_CACHE_ENTRIES:
            self._large = None
        return listing

    def _read_tree(self, tree_id: ObjectId) -> Listing:
        self._reading(1)
        listing = Listing(self.repo.read_dirtree(tree_id))
        self.records_read += len(listing) // _TREE_RECORD_ENTRIES  # its pages: the next check
        return listing

    def _dirmeta(self, meta_id: ObjectId) -> DirMeta:
        return self._dirmetas.get_or_make(meta_id, self._read_dirmeta)

    def _read_dirmeta(self, meta_id: ObjectId) -> DirMeta:
        self._reading(1)
        return self.repo.read_dirmeta(meta_id)

    def _header(self, file_id: ObjectId) -> tuple[FileHeader, int]:
        return self._headers.get_or_make(file_id, self._read_header)

    def _read_header(self, file_id: ObjectId) -> tuple[FileHeader, int]:
        self._reading(1)
        return self.repo.read_file_header(file_id)

    def _reading(self, records: int) -> None:
        """Count ``records`` about to be read; run index_hook first if it is due."""
        if self.records_read >= self._next_check and self.index_hook is not None:
            self._next_check = self.records_read + INDEX_CHECK_RECORDS
            self.index_hook()
        self.records_read += records

    def _file_stats(self, tree_id: ObjectId, start: int) -> list[FileStat | SapwoodError]:
        return self._stat_batches.get_or_make((tree_id, start), self._read_file_stats)

    def _read_file_stats(self, batch: tuple[ObjectId, int]) -> list[FileStat | SapwoodError]:
        """Stats of the files ``start`` to ``start + HEADER_BATCH`` of a tree, or for a
        file whose record cannot be read, why.

        Batches are aligned, so a listing the kernel takes in several requests reads
        each file's header once. A batch with a damaged record is read again file by
        file, so that the damage is that file's alone.
        """
        tree_id, start = batch
        ids = self._tree(tree_id).file_ids(start, start + HEADER_BATCH)
        self._reading(len(ids))
        try:
            found: list[FileStat | SapwoodError] = list(self.repo.read_file_stats(ids))
        except SapwoodError:
            found = [self._one_stat(file_id) for file_id in ids]
        for index, (stats, file_id) in enumerate(zip(found, ids, strict=True)):
            if isinstance(stats, FileStat) and stats.size > MAX_FILE_SIZE:
                found[index] = CorruptObjectError(
                    f"object {file_id.hex()}: a size of {stats.size} bytes is not a file's"
                )
        return found

    def _one_stat(self, file_id: ObjectId) -> FileStat | SapwoodError:
        try:
            return self.repo.read_file_stats([file_id])[0]
        except SapwoodError as exc:
            return exc.with_traceback(None)  # cached: it must not keep the frames alive
