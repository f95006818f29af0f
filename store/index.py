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
"""

from __future__ import annotations

import contextlib
import enum
import os
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import lmdb

from store.errors import (
    CorruptObjectError,
    FormatError,
    IndexDamagedError,
    ObjectMissingError,
    OutOfSpaceError,
    ReadOnlyRepositoryError,
    RefConflictError,
    RefExistsError,
    RefTargetError,
    SapwoodError,
    UsageError,
)
from store.ids import ID_BYTES, ObjectId, ObjectType
from store.mapped_pages import madvise_dontneed, mapped_ranges
from store.objects import DirTree, FileStat, file_stat

MAP_SIZE = 1 << 40  # address space only; the file grows as data is written
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")
_DATABASES = ("objects", "commits", "refs", "partial", "statcache")
_OPTIONAL_DATABASES = ("commitmeta",)  # absent from older indexes until first written
_FILE_TAG = ObjectType.FILE.value
_MIN_DATA_BYTES = 2 * 4096  # LMDB's two meta pages
_MAX_KEY = 511  # LMDB's longest key
_HEX_DIGITS = "0123456789abcdefABCDEF"


class AnyTarget(enum.Enum):
    """The type of :data:`ANY`: a ref update that moves the ref whatever it holds."""

    ANY = "any"


ANY = AnyTarget.ANY
# What a ref update expects the ref to hold: a commit, None (absent) or ANY.
ExpectedRef = ObjectId | None | AnyTarget


@dataclass(frozen=True)
class ObjectRecord:
    """What the index knows of one object."""

    kind: ObjectType
    payload: bytes

    @property
    def file_size(self) -> int:
        return int(_U64.unpack_from(self.payload)[0])

    @property
    def file_header_bytes(self) -> bytes:
        return self.payload[_U64.size :]

    @classmethod
    def decode(cls, value: bytes) -> ObjectRecord:
        try:
            kind = ObjectType(value[:1])
        except ValueError:
            raise FormatError("unknown object type in the index") from None
        return cls(kind, value[1:])

    def encode(self) -> bytes:
        return self.kind.value + self.payload

    @classmethod
    def for_file(cls, size: int, header: bytes) -> ObjectRecord:
        return cls(ObjectType.FILE, _U64.pack(size) + header)


@dataclass
class RefUpdate:
    name: str
    new: ObjectId | None  # None deletes the ref
    expected: ExpectedRef = ANY  # ObjectId, None (must not exist) or ANY


@dataclass
class WriteBatch:
    """Everything one transaction adds to the index, applied atomically."""

    objects: dict[ObjectId, ObjectRecord] = field(default_factory=dict)
    commits: dict[ObjectId, int] = field(default_factory=dict)
    refs: list[RefUpdate] = field(default_factory=list)
    statcache: dict[bytes, bytes] = field(default_factory=dict)
    partial_clear: set[ObjectId] = field(default_factory=set)
    partial_mark: set[ObjectId] = field(default_factory=set)
    remove_objects: set[ObjectId] = field(default_factory=set)  # also drops commit entries
    statcache_remove: set[bytes] = field(default_factory=set)
    # objects the new ones name without adding them: they must still be indexed
    required: set[tuple[ObjectId, ObjectType]] = field(default_factory=set)  # (id, kind named)
    # commit id -> (the signatures it must hold now: bytes, None for none, or ANY; new)
    commitmeta: dict[ObjectId, tuple[bytes | AnyTarget | None, bytes]] = field(default_factory=dict)
    # check that what each dirtree of ``objects`` names is there (a transaction's commit
    # point; not rebuild-index, which lists what it finds, missing files and all)
    check_trees: bool = False


class IndexReader:
    """Lookups inside one read transaction (a consistent snapshot)."""

    def __init__(self, txn: Any, dbs: dict[str, Any]) -> None:
        self._txn = txn
        self._dbs = dbs

    def _get(self, key: bytes, table: str) -> Any:
        """The value at ``key`` in ``table``, None if absent. A key LMDB cannot hold
        (empty or too long: an id of the wrong size from a caller) is absent, not an
        error of LMDB's (which would read as a damaged index)."""
        if not 0 < len(key) <= _MAX_KEY:
            return None
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


def _iter_after(cursor: Any, after: bytes) -> Iterator[tuple[bytes, Any]]:
    """A cursor's (key, value) pairs past ``after`` (all of them if it is empty)."""
    found = cursor.set_range(after) if after else cursor.first()
    while found:
        key = bytes(cursor.key())
        if key != after:
            yield key, cursor.value()
        found = cursor.next()


class _SharedEnv:
    """One LMDB environment per path and process: LMDB forbids opening one twice."""

    _lock = threading.Lock()
    _open: ClassVar[dict[str, _SharedEnv]] = {}

    def __init__(self, key: str, access: Access) -> None:
        self.key = key
        self.users = 0
        self.access = access
        self._mapped: list[tuple[int, int]] | None = None
        self.env, self.dbs = self._open_env()
        if access is Access.CREATE:  # made now: a reopen (remap) must find it, never make one
            self.access = Access.READ_WRITE

    def _open_env(self) -> tuple[Any, dict[str, Any]]:
        access = self.access
        if access is not Access.CREATE:
            _check_data_file(Path(self.key))
        locked = access is not Access.READ_ONLY or _lock_file_writable(Path(self.key))
        try:
            env = lmdb.open(
                self.key,
                map_size=MAP_SIZE,
                max_dbs=len(_DATABASES) + len(_OPTIONAL_DATABASES),
                readonly=access is Access.READ_ONLY,
                lock=locked,
                max_readers=1024,
                subdir=True,
                create=access is Access.CREATE,
            )
        except lmdb.Error as exc:
            raise IndexDamagedError(f"{self.key}: the index cannot be opened: {exc}") from None
        if locked:
            _clear_dead_readers(env)
        try:
            if access is not Access.CREATE:
                _check_not_truncated(env, Path(self.key))
            dbs = {
                name: env.open_db(name.encode(), create=access is Access.CREATE)
                for name in _DATABASES
            }
            dbs.update(_optional_dbs(env, access))
        except lmdb.NotFoundError:
            env.close()
            raise IndexDamagedError(f"{self.key}: the index lacks sapwood's tables") from None
        except (lmdb.Error, IndexDamagedError) as exc:
            env.close()
            if isinstance(exc, IndexDamagedError):
                raise
            raise IndexDamagedError(f"{self.key}: the index is damaged: {exc}") from None
        return env, dbs

    def reopen(self) -> None:
        self.env.close()
        self._mapped = None
        self.env, self.dbs = self._open_env()

    def mapped_ranges(self) -> list[tuple[int, int]]:
        """Where this environment's data file is mapped (read once: /proc/self/maps of a
        Python process is long, 0.5 ms to parse; LMDB maps the file once, at open)."""
        if self._mapped is None:
            self._mapped = mapped_ranges(os.path.join(self.key, "data.mdb"))
        return self._mapped

    @classmethod
    def acquire(cls, path: Path, access: Access) -> _SharedEnv:
        key = os.path.realpath(path)
        with cls._lock:
            shared = cls._open.get(key) or cls(key, access)
            cls._open[key] = shared
            shared.users += 1
            return shared

    def release(self) -> None:
        with self._lock:
            self.users -= 1
            if self.users == 0:
                del self._open[self.key]
                self.env.close()


class Access(enum.Enum):
    """How an index is opened: created by init, read and written, or only read."""

    CREATE = "create"
    READ_WRITE = "read-write"
    READ_ONLY = "read-only"


def _optional_dbs(env: Any, access: Access) -> dict[str, Any]:
    """Sub-databases newer than the index format: made by a writer, absent (None) to a
    reader of an index made before them."""
    found: dict[str, Any] = {}
    for name in _OPTIONAL_DATABASES:
        try:
            found[name] = env.open_db(name.encode(), create=access is not Access.READ_ONLY)
        except lmdb.NotFoundError:
            found[name] = None
    return found


def _damaged(path: Path, what: str) -> IndexDamagedError:
    return IndexDamagedError(
        f"{path}: {what}; the repository cannot be used (see 'Damaged index' in "
        "docs/decisions.md: archive repositories can rebuild it with sapwood rebuild-index)"
    )


def _check_data_file(path: Path) -> None:
    """An existing index has a data file of at least LMDB's two meta pages, and neither
    it nor the lock file is a symlink: LMDB opens both read-write through one (creating,
    truncating and rewriting the lock file), so another user's repository could have a
    root process overwrite any file."""
    for name in ("data.mdb", "lock.mdb"):
        if os.path.islink(path / name):
            raise _damaged(path, f"index/{name} is a symlink")
    data = path / "data.mdb"
    try:
        size = os.stat(data).st_size
    except FileNotFoundError:
        raise _damaged(path, "the index is missing (no data.mdb)") from None
    except OSError as exc:
        raise _damaged(path, f"the index cannot be read: {exc.strerror}") from None
    if size < _MIN_DATA_BYTES:
        raise _damaged(path, f"the index is empty or truncated ({size} bytes)")


def _check_not_truncated(env: Any, path: Path) -> None:
    """Every page the index says it uses must be in the file: LMDB maps the file, and
    touching a page past its end kills the process with SIGBUS instead of an error."""
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = os.stat(path / "data.mdb").st_size
    if size < needed:
        raise _damaged(path, f"the index is truncated ({size} bytes of {needed})")


def _cover_last_page(env: Any, path: str) -> None:
    """Make data.mdb reach the last page the index says it uses, after a write.

    A write transaction can take pages past the end of the file and free them again
    before it commits (LMDB's loose pages): they are never written, so the file ends
    before ``last_pgno``, which _check_not_truncated then took for a truncated index
    (every command refused the repository; seen after a prune, 3 runs in 12). They are
    free, never read: allocating the tail (never shrinking, whatever other writers do)
    keeps the opening check meaningful for a file that really lost its end."""
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    data = os.path.join(path, "data.mdb")
    try:
        if os.stat(data).st_size >= needed:
            return
        fd = os.open(data, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.posix_fallocate(fd, 0, needed)
        finally:
            os.close(fd)
    except OSError:  # no space, or no fallocate: the opening check says so later
        return


def _clear_dead_readers(env: Any) -> None:
    """Free the reader slots of processes that died reading (a commit killed during its
    scan holds a snapshot). LMDB clears its reader table only when a process opens the
    index with no other process holding it; while one does (a mount daemon), a dead
    slot stays, no page freed after its snapshot is ever reused, and every commit and
    prune grows the index for good. Checking costs a look at each slot's pid."""
    with contextlib.suppress(lmdb.Error):  # the table is LMDB's to keep; reads work anyway
        env.reader_check()


def _lock_file_writable(path: Path) -> bool:
    """Readers of LMDB register in lock.mdb; where they cannot write it (another user's
    repository, read-only media) they read without registering, as LMDB allows."""
    return os.access(path / "lock.mdb", os.R_OK | os.W_OK)


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
        self._shared = _SharedEnv.acquire(path, access)
        self._env = self._shared.env
        self._dbs = self._shared.dbs
        self._closed = False
        self.read_only = self._shared.access is Access.READ_ONLY

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._shared.release()

    def remap(self) -> None:
        """Close and reopen the memory map, so its pages leave this process's resident set
        (they stay in the page cache). For a long-lived reader that walks much of the
        index, the mount daemon: call it with no transaction open, as the only user of
        this repository's index in the process."""
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
        if self._closed:
            return
        for start, length in self._shared.mapped_ranges():
            madvise_dontneed(start, length)

    def _require_open(self) -> None:
        """A closed repository is the caller's slip, not a damaged index."""
        if self._closed:
            raise UsageError("the repository is closed; open it again to use it")

    @contextmanager
    def reader(self) -> Iterator[IndexReader]:
        self._require_open()
        try:
            txn = self._env.begin(buffers=False)
        except lmdb.Error as exc:
            raise IndexDamagedError(f"the index cannot be read: {exc}") from None
        try:
            yield IndexReader(txn, self._dbs)
        except lmdb.Error as exc:
            raise IndexDamagedError(f"the index cannot be read: {exc}") from None
        finally:
            txn.abort()

    def apply(self, batch: WriteBatch) -> None:
        """Apply ``batch`` in one LMDB write transaction: the commit point."""
        self._require_open()
        if self.read_only:
            raise ReadOnlyRepositoryError(
                "this repository is read-only for you; nothing was written"
            )
        try:
            self._apply(batch)
            _cover_last_page(self._env, self._shared.key)
        except lmdb.Error as exc:
            text = str(exc)
            if isinstance(exc, lmdb.MapFullError) or "No space left" in text or "quota" in text:
                raise OutOfSpaceError(
                    f"the index cannot grow: {exc}; nothing was committed"
                ) from exc
            raise SapwoodError(f"cannot write the index ({exc}); nothing was committed") from exc

    def _apply(self, batch: WriteBatch) -> None:
        with self._env.begin(write=True) as txn:
            objects = self._dbs["objects"]
            _check_required(txn, objects, batch)
            if batch.check_trees:
                _check_new_trees(txn, objects, batch, self.release_pages)
            _check_refs(txn, self._dbs, batch)
            for object_id, record in batch.objects.items():
                txn.put(object_id, record.encode(), db=objects, overwrite=False)
            for commit_id, timestamp in batch.commits.items():
                txn.put(commit_id, _I64.pack(timestamp), db=self._dbs["commits"])
            for commit_id in batch.partial_clear:
                txn.delete(commit_id, db=self._dbs["partial"])
            for commit_id in batch.partial_mark:
                txn.put(commit_id, b"", db=self._dbs["partial"])
            for object_id in batch.remove_objects:
                txn.delete(object_id, db=objects)
                txn.delete(object_id, db=self._dbs["commits"])
                if self._dbs.get("commitmeta") is not None:
                    txn.delete(object_id, db=self._dbs["commitmeta"])
            _put_commitmeta(txn, self._dbs.get("commitmeta"), batch)
            for key in batch.statcache_remove:
                txn.delete(key, db=self._dbs["statcache"])
            for update in batch.refs:
                if update.new is None:
                    txn.delete(update.name.encode(), db=self._dbs["refs"])
                else:
                    txn.put(update.name.encode(), update.new, db=self._dbs["refs"])
            for key, value in batch.statcache.items():
                txn.put(key, value, db=self._dbs["statcache"])


def _put_commitmeta(txn: Any, db: Any, batch: WriteBatch) -> None:
    """Detached signatures, each a compare-and-swap of what the writer read."""
    for commit_id, (expected, new) in batch.commitmeta.items():
        if db is None:
            raise ReadOnlyRepositoryError("this index cannot hold signatures; nothing was written")
        current = txn.get(commit_id, db=db)
        if expected is not ANY and (None if current is None else bytes(current)) != expected:
            raise RefConflictError(
                f"the signatures of commit {commit_id.hex()} changed while this transaction "
                "ran; nothing was changed",
                name=commit_id.hex(),
            )
        txn.put(commit_id, new, db=db)


_KIND_NAMES = {kind.value: kind.suffix for kind in ObjectType}
_RELEASE_TREES = 256  # new trees checked between two releases of the index's pages


def _check_required(txn: Any, objects_db: Any, batch: WriteBatch) -> None:
    for object_id, kind in batch.required:
        _check_present(txn, objects_db, batch, object_id, kind)


def _check_new_trees(
    txn: Any, objects_db: Any, batch: WriteBatch, release: Callable[[], None]
) -> None:
    """Everything a dirtree of the batch names must be in the batch or the index, as
    the kind it is named as. Checked from the trees themselves at the commit point
    rather than from a list kept while they were written: a million files would be a
    million entries of that list (store/transaction.py). The index's pages it reads
    are released as it goes (``release``, Index.release_pages)."""
    checked = 0
    for record in batch.objects.values():
        if record.kind is not ObjectType.DIRTREE:
            continue
        checked += 1
        if checked % _RELEASE_TREES == 0:
            release()
        tree = DirTree.decode(record.payload)
        for _, file_id in tree.files:
            _check_present(txn, objects_db, batch, file_id, ObjectType.FILE)
        for _, entry in tree.dirs:
            _check_present(txn, objects_db, batch, entry.tree, ObjectType.DIRTREE)
            _check_present(txn, objects_db, batch, entry.meta, ObjectType.DIRMETA)


def _check_present(
    txn: Any, objects_db: Any, batch: WriteBatch, object_id: ObjectId, kind: ObjectType
) -> None:
    """ObjectMissingError unless ``object_id`` is in the batch or the index, and
    CorruptObjectError unless it is of ``kind`` there."""
    record = batch.objects.get(object_id)
    found = record.kind.value if record is not None else None
    if found is None:
        value = txn.get(object_id, db=objects_db)
        if value is None:
            raise ObjectMissingError(
                f"object {object_id.hex()}, which this commit reuses, was removed "
                "from the repository while it ran "
                "(by prune or fsck with delete); nothing was committed",
                object_id=ObjectId(object_id),
            )
        found = bytes(value[:1])
    if found != kind.value:
        raise CorruptObjectError(
            f"object {object_id.hex()} is named as a {kind.suffix} but is a "
            f"{_KIND_NAMES.get(found, 'another kind')}: nothing was committed",
            object_id=ObjectId(object_id),
        )


def _check_refs(txn: Any, dbs: dict[str, Any], batch: WriteBatch) -> None:
    """Compare-and-swap, refs name commits only, and no ref is a directory of another."""
    deleted = {update.name for update in batch.refs if update.new is None}
    created = {update.name for update in batch.refs if update.new is not None}
    holding = {above for name in created for above in _ref_dirs(name)}  # a/b/c: a, a/b
    for update in batch.refs:
        current = txn.get(update.name.encode(), db=dbs["refs"])
        current_id = None if current is None else bytes(current)
        if update.expected is not ANY and current_id != update.expected:
            now = "absent" if current_id is None else current_id.hex()
            raise RefConflictError(
                f"ref {update.name} moved while this transaction ran (it is now {now}); "
                "nothing was changed",
                name=update.name,
                expected=update.expected,
                actual=None if current_id is None else ObjectId(current_id),
            )
        if update.new is not None:
            _check_is_commit(txn, dbs["objects"], batch, update)
            if current_id is None:
                _check_ref_path(txn, dbs["refs"], update.name, deleted, created, holding)


def _check_is_commit(txn: Any, objects_db: Any, batch: WriteBatch, update: RefUpdate) -> None:
    assert update.new is not None
    record = batch.objects.get(update.new)
    kind = record.kind.value if record is not None else None
    if kind is None:
        value = txn.get(update.new, db=objects_db)
        kind = None if value is None else bytes(value[:1])
    if kind != ObjectType.COMMIT.value:
        what = "no object" if kind is None else "not a commit"
        raise RefTargetError(f"ref {update.name}: {update.new.hex()} is {what}: refs name commits")


def _ref_dirs(name: str) -> list[str]:
    """The refs that would be directories of ``name``'s file: ``r:a/b/c`` -> r:a, r:a/b."""
    remote, sep, ref = name.rpartition(":")
    parts = ref.split("/")
    return [f"{remote}{sep}" + "/".join(parts[:depth]) for depth in range(1, len(parts))]


def _check_ref_path(
    txn: Any, refs_db: Any, name: str, deleted: set[str], created: set[str], holding: set[str]
) -> None:
    """Refs are laid out as files (archive mode's refs/heads/, pull, other tools), so
    ``a`` and ``a/b`` cannot both exist, in any mode. ``holding``: the _ref_dirs of every
    ref ``created`` (a set: comparing each new ref with every other was quadratic)."""
    above = _ref_dirs(name)
    for other in above:
        exists = other not in deleted and txn.get(other.encode(), db=refs_db) is not None
        if exists or other in created:
            raise RefExistsError(
                f"ref {name} cannot exist beside ref {other}: delete it first", name=other
            )
    below = name + "/"
    others = [o for o in created if o.startswith(below)] if name in holding else []
    with txn.cursor(db=refs_db) as cur:
        found = cur.set_range(below.encode())
        while found and bytes(cur.key()).startswith(below.encode()) and not others:
            key = bytes(cur.key()).decode("utf-8", "replace")
            if key not in deleted:
                others.append(key)
            found = cur.next()
    if others:
        raise RefExistsError(
            f"ref {name} cannot exist beside ref {others[0]}: delete it first", name=others[0]
        )
