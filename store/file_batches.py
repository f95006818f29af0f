"""The file objects of a transaction before its commit point: which ids it has claimed,
the batch it holds, publishing that batch early, and each writer thread's snapshot of
the index (store/transaction.py's module docstring says why a file object may be listed
before the commit point).

Every ``FLUSH_AT`` file objects and stat-cache records, the batch held is published
(synced, renamed into objects/, its directories synced) and listed by an LMDB
transaction of its own, then forgotten: memory stays bounded whatever the size of the
tree. After a flush each thread's snapshot is renewed, so that it sees the objects
flushed and LMDB may reuse the pages the old one pinned.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

from store.durability import space_errors
from store.ids import ObjectId
from store.index import Index, IndexReader, ObjectRecord, WriteBatch

log = logging.getLogger(__name__)
_NOTHING_COMMITTED = "nothing was committed"
FLUSH_AT = 16384  # file objects + stat-cache records held before they are published
_FLUSH_AT_VARIABLE = "SAPWOOD_FLUSH_AT"  # overrides FLUSH_AT (tests: flush small trees)

# Staged files to publish: (path in staging, path below objects/).
StagedFiles = list[tuple[str, str]]


class FileBatches:
    """The file objects and stat-cache records of one transaction until they are
    listed: ``publish`` makes staged files durable objects (Transaction's, shared with
    its commit point), then calls what lists the batch in ``index``."""

    def __init__(
        self,
        index: Index,
        publish: Callable[[StagedFiles, Callable[[Callable[[], None]], None]], None],
    ) -> None:
        self._index = index
        self._publish = publish
        self.pending = WriteBatch()  # file objects and stat-cache records not yet flushed
        self.staged: StagedFiles = []  # their files
        self._claimed: set[ObjectId] = set()  # staged, or flushed since readers were renewed
        self._mutex = threading.Lock()
        self._flush_lock = threading.Lock()
        self._generation = 0  # flushes so far: a reader older than the last is renewed
        self._flush_at = _flush_at()
        self._local = threading.local()
        self._reader_cms: list[AbstractContextManager[IndexReader]] = []

    def claim(self, object_id: ObjectId, ask_index: bool = True) -> bool:
        """True if the caller must store ``object_id`` (it is neither indexed nor staged).

        The index is asked before the id is remembered: an indexed object is never
        staged, so never flushed, and its id would stay in ``_claimed`` for the whole
        transaction (108 MiB per million files of a tree the repository already holds).
        Two threads that both find it missing: the second to claim it is refused; one
        that claims it just after a flush published it stages it once more, harmless.
        ``ask_index=False``: the caller found it missing in a snapshot of its own (a
        pull's walk); another writer that lists it meanwhile has it stored twice, as
        above, harmless.
        """
        with self._mutex:
            if object_id in self._claimed:
                return False
        if ask_index and self._reader().has_object(object_id):
            return False
        with self._mutex:
            if object_id in self._claimed:
                return False
            self._claimed.add(object_id)
        return True

    def release(self, object_id: ObjectId) -> None:
        """Forget a claim whose object could not be staged after all (a hardlink that
        failed): the caller stores it another way, which must be able to claim it."""
        with self._mutex:
            self._claimed.discard(object_id)

    def _reader(self) -> IndexReader:
        """This thread's read snapshot of the index, kept until the transaction next
        flushes (then a new one sees the objects flushed, and LMDB may reuse the pages
        the old one pinned).

        A snapshot is enough: an object another writer adds meanwhile is only staged
        twice, and the index keeps the first record.

        A flush ends the flushing thread's snapshot only; every other thread renews its
        own at its next claim (the generation differs). One that stops claiming while
        the transaction goes on keeps pinning the pages the flushes replace until the
        transaction ends (review7 18, review9 11): ending it from the flushing thread
        is not safe, as it may be inside a read, and pull's transactions (2,000 objects)
        never reach FLUSH_AT anyway.
        """
        reader: IndexReader | None = getattr(self._local, "reader", None)
        if reader is not None and self._local.generation != self._generation:
            self._drop_reader()  # objects were flushed since: see them
            reader = None
        if reader is None:
            cm = self._index.reader()
            with self._mutex:
                generation = self._generation
            reader = cm.__enter__()
            self._local.reader, self._local.reader_cm = reader, cm
            self._local.generation = generation
            with self._mutex:
                self._reader_cms.append(cm)
        return reader

    def _drop_reader(self) -> None:
        """End this thread's read snapshot (each thread ends only its own)."""
        cm = self._local.reader_cm
        with self._mutex:
            if cm not in self._reader_cms:
                return  # the transaction ended it already
            self._reader_cms.remove(cm)
        self._local.reader = None
        cm.__exit__(None, None, None)

    def close_readers(self) -> None:
        """End every thread's snapshot (the transaction is ending)."""
        with self._mutex:
            for cm in self._reader_cms:
                cm.__exit__(None, None, None)
            self._reader_cms.clear()
            self._local = threading.local()

    def add_object(
        self, object_id: ObjectId, record: ObjectRecord, staged: str | None, relpath: str
    ) -> None:
        """Hold a file object (its file staged at ``staged``, to go to ``relpath``)."""
        with self._mutex:
            self.pending.objects[object_id] = record
            if staged is not None:
                self.staged.append((staged, relpath))
        self.maybe_flush()

    def add_stat_cache(self, key: bytes, record: bytes) -> None:
        """Hold a stat-cache record (Transaction.put_stat_cache says why it is safe)."""
        with self._mutex:
            self.pending.statcache[key] = record
        self.maybe_flush()

    def maybe_flush(self) -> None:
        """Publish the file objects and stat-cache records held, once there are
        FLUSH_AT of them (see the module's docstring)."""
        if len(self.pending.objects) + len(self.pending.statcache) < self._flush_at:
            return
        with self._flush_lock:
            with self._mutex:
                if len(self.pending.objects) + len(self.pending.statcache) < self._flush_at:
                    return  # another thread flushed them meanwhile
                files, staged = self.pending, self.staged
                self.pending, self.staged = WriteBatch(), []
            if getattr(self._local, "reader", None) is not None:
                self._drop_reader()  # a snapshot left open keeps LMDB from reusing pages
            with space_errors(_NOTHING_COMMITTED):  # listed before a Ctrl-C lands
                self._publish(
                    staged, lambda durable: self._index.apply(files, before_commit=durable)
                )
            with self._mutex:
                self._claimed.difference_update(files.objects)  # the renewed readers see them
                self._generation += 1
            self._index.release_pages()
            log.debug("flushed %d file objects", len(files.objects))

    @property
    def flushes(self) -> int:
        """How many times file objects were published before the commit point so far."""
        return self._generation


def _flush_at() -> int:
    """FLUSH_AT, or SAPWOOD_FLUSH_AT if that is a positive number (ASCII digits): any
    other value is ignored, never a ValueError in every transaction."""
    chosen = os.environ.get(_FLUSH_AT_VARIABLE, "")
    if chosen.isascii() and chosen.isdigit() and int(chosen) > 0:
        return int(chosen)
    return FLUSH_AT
