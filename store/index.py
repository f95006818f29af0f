"""The LMDB index of a repository.

This is the one place that defines the index's layout. The environment lives in
``REPO/index/`` and holds these sub-databases (keys and values are bytes):

``objects``   key: object id (32 bytes).
              value: one type tag byte (store.ids.ObjectType) then
              - file:     u64 content size, then the canonical FileHeader encoding;
              - dirtree, dirmeta, commit: the object's canonical encoding itself.
              Presence here means "the object exists and is complete"; content
              files under objects/ that are not listed here are leftovers of an
              interrupted transaction and are ignored (prune removes them).
``commits``   key: commit id. value: i64 timestamp. Every commit, for listing and
              for resolving an abbreviated id with one cursor seek.
``refs``      key: ref name (UTF-8, ``REMOTE:REF`` for pulled refs). value: commit id.
``partial``   key: commit id. value: empty. Commits known to lack objects.
``statcache`` key: u64 st_dev + u64 st_ino of a source file. value: a record
              (store/statcache.py defines both) letting an unchanged re-commit
              skip reading the file; its last 32 bytes are the file id it
              vouches for (prune drops entries whose object it removes).
``commitmeta`` key: commit id. value: the commit's detached signatures, as
              store/signing.py encodes them (docs/format.md). Made by the first
              writer that needs it: indexes made before it lack it, and read as
              holding none.

A write transaction of LMDB is the commit point of a sapwood transaction: refs,
commits and metadata object entries change together or not at all. A large
transaction lists its file objects (and their stat-cache rows) earlier, in batches
of their own (store/transaction.py): a file object names nothing, so listing it
never makes the index claim what is missing, and the commit point checks that
every object its new trees name is listed.

This module reads the index (Index, IndexReader). Beside it: store/index_types.py (the
values passed in and out: ObjectRecord, WriteBatch, RefUpdate, ANY),
store/index_env.py (opening the LMDB environment, checked for damage) and
store/index_write.py (the commit point: a WriteBatch checked and applied).
"""

from __future__ import annotations

import os
import struct
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb

from store.errors import (
    FormatError,
    IndexDamagedError,
    OutOfSpaceError,
    ReadOnlyRepositoryError,
    SapwoodError,
    UsageError,
)
from store.ids import ID_BYTES, ObjectId, ObjectType
from store.index_env import Access, SharedEnv
from store.index_types import ANY, AnyTarget, ExpectedRef, ObjectRecord, RefUpdate, WriteBatch
from store.index_write import cover_last_page, write_batch
from store.objects import FileStat, file_stat, regular_file_owner_mode

# Names other modules import from here, though they live in the modules above.
__all__ = [
    "ANY",
    "Access",
    "AnyTarget",
    "ExpectedRef",
    "Index",
    "IndexReader",
    "ObjectRecord",
    "RefUpdate",
    "WriteBatch",
]

_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")
RegularFile = tuple[int, int, int, int]  # uid, gid, mode, content size: IndexReader.regular_files
_FILE_TAG = ObjectType.FILE.value
_MAX_KEY = 511  # LMDB's longest key
_READS_NOTED_AT_ONCE = 256  # a batch of lookups counts its reads in steps of this many
_HEX_DIGITS = "0123456789abcdefABCDEF"


def _no_count(count: int) -> None:
    """A reader made outside Index.reader counts nothing."""


class IndexReader:
    """Lookups inside one read transaction (a consistent snapshot)."""

    def __init__(
        self,
        txn: Any,
        dbs: dict[str, Any],
        note_reads: Callable[[int], None] = _no_count,
        shared: SharedEnv | None = None,
    ) -> None:
        self._live_txn = txn
        self._dbs = dbs
        self._note_reads = note_reads  # keeps the pages read from piling up (PageBudget.note)
        self._shared = shared
        self._forks = 0 if shared is None else shared.forks

    @property
    def _txn(self) -> Any:
        """The transaction, unless this process forked since it began: in the child its
        reader slot is the parent's, cleared when the parent ends it, and its pages are
        then reused by writers (attack21 8: garbage, or refs naming other commits)."""
        if self._shared is not None and self._shared.forks != self._forks:
            raise UsageError(
                "a snapshot begun before the process forked cannot be read in the child: "
                "open the repository after forking"
            )
        return self._live_txn

    def _get(self, key: bytes, table: str) -> Any:
        """The value at ``key`` in ``table``, None if absent. A key LMDB cannot hold
        (empty or too long: an id of the wrong size from a caller) is absent, not an
        error of LMDB's (which would read as a damaged index)."""
        if not 0 < len(key) <= _MAX_KEY:
            return None
        self._note_reads(1)
        return self._txn.get(key, db=self._dbs[table])

    def object(self, object_id: bytes) -> ObjectRecord | None:
        value = self._get(object_id, "objects")
        return None if value is None else ObjectRecord.decode(bytes(value))

    def file_stat(self, object_id: bytes) -> FileStat | None:
        """What stat shows of a file object, parsed in place (the mount's listings)."""
        value = self._get(object_id, "objects")
        if value is None or value[:1] != _FILE_TAG:
            return None
        return file_stat(value, _U64.unpack_from(value, 1)[0], 1 + _U64.size)

    def regular_files(self, object_ids: Iterable[bytes]) -> list[RegularFile | None]:
        """(uid, gid, mode, content size) of each id the index holds as a regular file
        object, None for any other (absent, not a file, a symlink), in that order: the
        link-checkout lookup's reads (store/inodes.py), one per farm file, kept lean."""
        get, objects = self._txn.get, self._dbs["objects"]
        found: list[RegularFile | None] = []
        for count, object_id in enumerate(object_ids, 1):
            if count % _READS_NOTED_AT_ONCE == 0:
                self._note_reads(_READS_NOTED_AT_ONCE)
            value = get(object_id, db=objects) if len(object_id) == ID_BYTES else None
            if value is None or value[:1] != _FILE_TAG:
                found.append(None)
                continue
            owner_mode = regular_file_owner_mode(value, 1 + _U64.size)
            found.append(None if owner_mode is None else (*owner_mode, *_U64.unpack_from(value, 1)))
        self._note_reads(len(found) % _READS_NOTED_AT_ONCE)
        return found

    def has_object(self, object_id: bytes) -> bool:
        return self._get(object_id, "objects") is not None

    def ref(self, name: str) -> ObjectId | None:
        try:
            key = name.encode()
        except UnicodeEncodeError:  # a lone surrogate: no ref's name (keys are UTF-8)
            return None
        if not 0 < len(key) <= _MAX_KEY:  # LMDB refuses such a key: no ref has it
            return None
        value = self._txn.get(key, db=self._dbs["refs"])
        return None if value is None else _id_value(bytes(value), "ref " + name)

    def refs(self) -> dict[str, ObjectId]:
        with self._txn.cursor(db=self._dbs["refs"]) as cur:
            return {_ref_key(bytes(k)): _id_value(bytes(v), "a ref") for k, v in cur}

    def commit_ids(self) -> Iterator[tuple[ObjectId, int]]:
        with self._txn.cursor(db=self._dbs["commits"]) as cur:
            for key, value in cur:
                if len(value) != _I64.size:
                    raise IndexDamagedError("the index's commit table holds a damaged record")
                yield _id_value(bytes(key), "the commit table"), int(_I64.unpack(value)[0])

    def commits_with_prefix(self, hex_prefix: str, limit: int = 2) -> list[ObjectId]:
        """Commit ids whose hex starts with ``hex_prefix`` (at most ``limit``); none for
        a prefix that is not hex (a ref name, say)."""
        if hex_prefix.strip(_HEX_DIGITS):
            return []
        even = hex_prefix[: len(hex_prefix) // 2 * 2]
        start = bytes.fromhex(even)
        found: list[ObjectId] = []
        with self._txn.cursor(db=self._dbs["commits"]) as cur:
            if not cur.set_range(start):
                return found
            for key in cur.iternext(values=False):
                key = bytes(key)
                if not key.startswith(start):
                    break
                if key.hex().startswith(hex_prefix):
                    found.append(ObjectId(key))
                    if len(found) >= limit:
                        break
        return found

    def commitmeta(self, commit_id: bytes) -> bytes | None:
        """The detached signatures of a commit, encoded; None when it has none."""
        if self._dbs.get("commitmeta") is None:
            return None
        return None if (value := self._get(commit_id, "commitmeta")) is None else bytes(value)

    def is_partial(self, commit_id: bytes) -> bool:
        return self._get(commit_id, "partial") is not None

    def partial_commits(self) -> list[ObjectId]:
        with self._txn.cursor(db=self._dbs["partial"]) as cur:
            return [ObjectId(bytes(k)) for k in cur.iternext(values=False)]

    def iter_statcache(self, after: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """The stat cache's rows in key order (those past the key ``after``)."""
        with self._txn.cursor(db=self._dbs["statcache"]) as cur:
            for key, value in _iter_after(cur, after):
                yield key, bytes(value)

    def iter_kinds(self, after: bytes = b"") -> Iterator[tuple[ObjectId, ObjectType]]:
        """Every object's id and type, in id order (those past the id ``after``),
        without reading the rest of their records."""
        with self._txn.cursor(db=self._dbs["objects"]) as cur:
            for key, value in _iter_after(cur, after):
                try:
                    kind = ObjectType(value[:1])
                except ValueError:
                    raise FormatError("unknown object type in the index") from None
                yield ObjectId(key), kind

    def statcache(self, key: bytes) -> bytes | None:
        value = self._get(key, "statcache")
        return None if value is None else bytes(value)

    def iter_objects(self) -> Iterator[tuple[ObjectId, ObjectRecord]]:
        with self._txn.cursor(db=self._dbs["objects"]) as cur:
            for key, value in cur:
                yield ObjectId(bytes(key)), ObjectRecord.decode(bytes(value))


# Read transactions a forked child inherited and let go of (begun before the fork: their
# environment's SharedEnv.forks changed since), kept for the child's life:
# ending one (an abort, or its object's deallocation) clears its reader slot, which is
# the parent's own in the shared lock file, and writers then reuse the pages the
# parent's snapshot still reads (attack18 3). LMDB's rule is that a child never uses
# its parent's environment; this keeps a child that merely drops its copy from doing so.
_INHERITED_READERS: list[Any] = []


_NEARLY_FULL = 8 << 20  # free bytes under which a failed index write is the disk's room


def _disk_nearly_full(directory: str) -> bool:
    """Whether the index's filesystem has (nearly) no room left: LMDB turns a write cut
    short by a full disk into EIO, which sent users looking for a failing disk
    (attack21 3); the free space tells the two apart."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _NEARLY_FULL


def _dropped_unclosed(shared: SharedEnv) -> None:
    """An Index's finalizer: it was collected without close(). Gives its share back
    (never waiting for a lock: SharedEnv.release_dropped), then says so as an unclosed
    file does (a ResourceWarning, shown with -W default or python -X dev)."""
    shared.release_dropped()
    warnings.warn(
        f"a sapwood repository was not closed (index {shared.key});"
        " its share of the index given back",
        ResourceWarning,
        stacklevel=1,  # a finalizer has no caller of its own: 2 named weakref's code
    )


def _iter_after(cursor: Any, after: bytes) -> Iterator[tuple[bytes, Any]]:
    """A cursor's (key, value) pairs past ``after`` (all of them if it is empty)."""
    found = cursor.set_range(after) if after else cursor.first()
    while found:
        key = bytes(cursor.key())
        if key != after:
            yield key, cursor.value()
        found = cursor.next()


def _id_value(value: bytes, where: str) -> ObjectId:
    if len(value) != ID_BYTES:
        raise IndexDamagedError(f"the index is damaged: {where} holds no object id")
    return ObjectId(value)


def _ref_key(key: bytes) -> str:
    try:
        return key.decode()
    except UnicodeDecodeError:
        raise IndexDamagedError("the index is damaged: a ref name is not UTF-8") from None


class Index:
    """The LMDB index of one repository.

    ``access`` says how: CREATE (init only), READ_WRITE, or READ_ONLY for a
    repository this process may not write. Opening an existing index never creates
    one: a missing, empty or truncated index is an IndexDamagedError.
    """

    def __init__(self, path: Path, access: Access = Access.READ_WRITE) -> None:
        self._shared = SharedEnv.acquire(path, access)
        self._env = self._shared.env
        self._dbs = self._shared.dbs
        self._closed = False
        self.read_only = self._shared.access is Access.READ_ONLY
        # Collected without close(): the share is given back all the same (each open
        # index maps MAP_SIZE, 1 TiB, of address space; ~127 dropped ones filled it).
        # Not at exit (the process's end unmaps everything; a forked child's exit
        # should not touch the parent's environment).
        self._finalizer = weakref.finalize(self, _dropped_unclosed, self._shared)
        self._finalizer.atexit = False

    def close(self) -> None:
        """Give back this Index's share of the environment (once; thread-safe)."""
        self._closed = True
        if self._finalizer.detach() is not None:  # None: closed, or being collected
            self._shared.release()

    def remap(self) -> None:
        """Close and reopen the memory map, so its pages leave this process's resident set
        (they stay in the page cache). For a long-lived reader that walks much of the
        index, the mount daemon: call it with no transaction open, as the only user of
        this repository's index in the process."""
        self._require_open()  # in a forked child it closed the parent's (R17-11)
        if self._shared.users != 1:
            raise RuntimeError("remap needs the only open index of the repository")
        self._shared.reopen()
        self._env, self._dbs = self._shared.env, self._shared.dbs

    def release_pages(self) -> None:
        """Let the pages of the memory map that reads have touched leave this process's
        resident set (they stay in the page cache), with no transaction to close.

        A walk of a million files reads most of the index through the map, and every
        page read stays resident (300 MiB at a million files) until the map is closed,
        which :meth:`remap` can only do with no transaction open. madvise(DONTNEED) on
        the map drops the pages' mappings instead: LMDB maps the file read-only and
        never rewrites a page a live snapshot can see, so a later read faults the same
        bytes back in from the page cache. Long walks (commit, fsck, prune) call it
        every few thousand objects; where it cannot be done it does nothing.
        """
        if not self._closed:
            self._shared.release_pages()

    def take_over_page_releases(self) -> None:
        """Point reads no longer count towards the map's budget (store/index_env.py,
        PageBudget): the caller calls :meth:`release_pages` on a budget of its own, for
        every Index of this repository in the process."""
        self._shared.pages.counting_reads = False

    def _require_open(self) -> None:
        """A closed repository is the caller's slip, not a damaged index; so is one
        inherited across fork: LMDB forbids the parent's environment in the child,
        whose transactions would hold reader slots under the parent's pid, cleared
        when the parent closes or exits, and read pages writers reuse (attack21 6)."""
        if self._closed:
            raise UsageError("the repository is closed; open it again to use it")
        if self._shared.forks:
            raise UsageError(
                f"{self._shared.key}: this repository was open when the process forked "
                "and cannot be used in the child: close it before forking, or start "
                "workers with spawn"
            )

    @contextmanager
    def reader(self) -> Iterator[IndexReader]:
        self._require_open()
        try:
            txn = self._env.begin(buffers=False)
        except lmdb.Error as exc:
            raise IndexDamagedError(f"the index cannot be read: {exc}") from None
        shared = self._shared
        forks = shared.forks  # changed by the end: ended in a forked child
        try:
            yield IndexReader(txn, self._dbs, shared.pages.note_reads, shared)
        except lmdb.Error as exc:
            raise IndexDamagedError(f"the index cannot be read: {exc}") from None
        finally:
            if shared.forks == forks:
                txn.abort()
            else:  # begun before a fork, and this is the child: see _INHERITED_READERS
                _INHERITED_READERS.append(txn)

    def apply(self, batch: WriteBatch, before_commit: Callable[[], None] | None = None) -> None:
        """Apply ``batch`` in one LMDB write transaction: the commit point.
        ``before_commit`` runs inside it, after the checks and the rows, right before
        the LMDB commit (Transaction._publish: the wait for the flush of the objects the
        rows list); what it raises aborts the write."""
        self._require_open()
        if self.read_only:
            raise ReadOnlyRepositoryError(
                "this repository is read-only for you; nothing was written"
            )
        try:
            write_batch(self._env, self._dbs, batch, self._shared.pages, before_commit)
            cover_last_page(self._env, self._shared.key)
        except lmdb.Error as exc:
            text = str(exc)
            if isinstance(exc, lmdb.MapFullError) or "No space left" in text or "quota" in text:
                raise OutOfSpaceError(
                    f"the index cannot grow: {exc}; nothing was committed"
                ) from exc
            if _disk_nearly_full(self._shared.key):  # a short write: LMDB says EIO
                raise OutOfSpaceError(
                    f"no space left on the disk: the index cannot be written ({exc}); "
                    "nothing was committed"
                ) from exc
            raise SapwoodError(f"cannot write the index ({exc}); nothing was committed") from exc
