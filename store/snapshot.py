"""A read snapshot: what a repository's index held at one moment.

``with repo.snapshot() as snap:`` gives the reads that callers outside the store
need to make together, all from one consistent view: whatever writers commit
meanwhile (a ref moved, a commit added, a prune) is not seen until the next
snapshot, and what the snapshot shows stays true within it. A snapshot is a read
transaction of the index: keep it short (a long one holds pages a writer would
reuse), use it in the thread that opened it, and not after its block ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import NoReturn, cast

from store.errors import UsageError
from store.ids import ObjectId, ObjectType
from store.index import IndexReader
from store.inodes import LinkedObject, ObjectInodes
from store.statcache import StatCacheRecord, stat_cache_key


class Snapshot:
    """Reads from one consistent view of the index (see the module's docstring)."""

    __slots__ = ("_inodes", "_reader")

    def __init__(self, reader: IndexReader, inodes: ObjectInodes | None = None) -> None:
        self._reader = reader
        self._inodes = inodes  # None where objects are never linked (archive)

    @property
    def object_inodes(self) -> ObjectInodes | None:
        """The listing of object files' inodes this snapshot uses for link-checkout
        recognition (made when first needed): Repository.snapshot(after=) keeps it."""
        return self._inodes

    def end(self) -> None:
        """Called as its block ends: any later read is a UsageError, not LMDB's error
        about a transaction that is gone."""
        self._reader = cast(IndexReader, _Ended())

    def ref(self, name: str) -> ObjectId | None:
        """The commit ``name`` points at, or None if there is no such ref."""
        return self._reader.ref(name)

    def refs(self) -> dict[str, ObjectId]:
        """Every ref and the commit it points at."""
        return self._reader.refs()

    def has_object(self, object_id: ObjectId) -> bool:
        """Whether the index records an object of this id (of any type)."""
        return self._reader.has_object(object_id)

    def commits(self) -> Iterator[tuple[ObjectId, int]]:
        """(id, timestamp) of every commit the repository holds, ordered by id."""
        yield from self._reader.commit_ids()  # reads when iterated: within the block

    def commits_with_prefix(self, hex_prefix: str, limit: int = 2) -> list[ObjectId]:
        """Commit ids whose hex starts with ``hex_prefix`` (lower case), at most ``limit``."""
        return self._reader.commits_with_prefix(hex_prefix, limit)

    def stat_cache(self, st: os.stat_result) -> StatCacheRecord | None:
        """The stat cache's record of the source file ``st`` describes, if any (a record
        of an older layout counts as none).

        A record counts only if it names a file object the repository holds (not one
        pruned since it was written): one naming a commit or a tree (a damaged or forged
        index) would put that object into the next commit as a file, a commit that no
        reader could follow."""
        raw = self._reader.statcache(stat_cache_key(st))
        record = None if raw is None else StatCacheRecord.decode(raw)
        if record is None:
            return None
        found = self._reader.object(record.file_id)
        return record if found is not None and found.kind is ObjectType.FILE else None

    def object_for_inode(self, st: os.stat_result, parent: os.stat_result) -> LinkedObject | None:
        """The file object a source file is (its own inode, unchanged since a checkout
        linked it), so that commit can take its id without reading it; None when it is
        not one, or not one to trust (store/inodes.py says when).

        ``st`` is the file's lstat and ``parent`` that of the directory holding it. The
        first call that sees a candidate lists the inodes of every object file (one
        directory pass, no stat per object); later ones, within this snapshot, reuse it.
        """
        if self._inodes is None:
            return None
        return self._inodes.lookup(self._reader, st, parent)

    def objects_for_inodes(
        self, stats: Sequence[os.stat_result], parent: os.stat_result
    ) -> list[LinkedObject | None]:
        """:meth:`object_for_inode` of each file of the one directory ``parent``, in the
        order of ``stats``: what a scan asks once a directory (its trust is decided once,
        not once a file)."""
        if self._inodes is None:
            return [None] * len(stats)
        return self._inodes.lookup_many(self._reader, stats, parent)


class _Ended:
    """What a snapshot reads from once its block has ended."""

    def __getattr__(self, name: str) -> NoReturn:
        raise UsageError("a snapshot was read after its with block ended; take a new one")
