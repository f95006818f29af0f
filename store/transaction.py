"""Transactions: the only way anything is written into a repository.

Content is staged in ``tmp/staging-BOOTID-…/`` under a shared repository lock.
``commit()`` links the staged files into ``objects/`` and makes them and their names
durable with one syncfs (a name already taken is replaced after it: Transaction._publish),
and then applies one LMDB write
transaction that adds the object entries and moves the refs: that is the commit
point. A crash before it leaves only unlisted files (ignored, later pruned) and
file objects already published (below); a crash after it leaves a complete commit.

Memory stays bounded whatever the size of the tree: every ``FLUSH_AT`` file objects
and stat-cache records (store/file_batches.py), the file objects staged so far are
published the same way
(synced, renamed, their directories synced) and listed in the index by an LMDB
transaction of their own, with the stat-cache records, and forgotten. A file object
names nothing, so listing it early never makes the index claim what is missing: such
objects are complete objects that no commit needs until the commit point, as prune
sees them, and prune removes them if the transaction is aborted or killed (OSTree's
objects behave so too). Metadata objects (trees, commits) and ref moves wait for the
commit point, which checks that everything each new tree names is there.

Writers may call ``write_*`` from several threads at once.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Protocol

import blake3

from store.content import ContentStore
from store.durability import InBackground, fsync_dirs, space_errors, syncfs
from store.errors import ModePolicyError, OutOfSpaceError, SourceError
from store.file_batches import FileBatches
from store.filez import VerifiedFile
from store.ids import ObjectId, ObjectType, digest
from store.index import (
    ANY,
    AnyTarget,
    ExpectedRef,
    Index,
    ObjectRecord,
    RefUpdate,
    WriteBatch,
)
from store.interrupts import interrupts_held
from store.locking import ensure_tmp, unlock_and_close
from store.modes import RepoMode
from store.names import check_ref_name
from store.objects import Commit, DirMeta, DirTree, FileHeader
from store.space import SpacePolicy
from store.staging import new_staging, remove_abandoned_staging
from store.statcache import StatCacheRecord, stat_cache_key

log = logging.getLogger(__name__)
_NOTHING_COMMITTED = "nothing was committed"
SMALL_FILE = 4 << 20  # files up to this size are read once, into memory
# Renames into more object directories than this are made durable by one syncfs of the
# filesystem, not an fsync of each directory: each fsync flushed the disk's cache once
# (ext4 without a journal, as here: ~0.2 ms and a flush each; an update pull's ~85
# directories took 7-22 ms, the syncfs 2-6 ms, load 3-4). What a syncfs flushes beside
# them is what was written since the syncfs of the content a moment before.
_FSYNC_DIRS_AT_MOST = 16
# What Transaction._publish hands the staged files' listing: the function to call right
# before its LMDB commit (it waits until the files are durable).
ListThem = Callable[[Callable[[], None]], None]


def _nothing_to_wait_for() -> None:
    """The files are durable already, or nothing is promised (fsync off)."""


class TransactionHost(Protocol):
    """What a transaction needs of its repository (store.repo.Repository is one).

    A protocol rather than the class itself: the repository makes transactions, so
    this module cannot import it without an import cycle.
    """

    @property
    def path(self) -> Path: ...
    @property
    def mode(self) -> RepoMode: ...
    @property
    def fsync(self) -> bool: ...
    @property
    def space(self) -> SpacePolicy: ...
    @property
    def index(self) -> Index: ...
    @property
    def content(self) -> ContentStore: ...
    def lock(self, exclusive: bool) -> AbstractContextManager[None]: ...
    def write_ref_mirror(self) -> None: ...


class Transaction:
    """Stage objects, then commit them and the ref moves atomically."""

    def __init__(self, repo: TransactionHost) -> None:
        self._repo = repo
        self._batch = WriteBatch()  # metadata objects, refs, ...: for the commit point
        self._staged: list[tuple[str, str]] = []  # their files (archive), and signatures
        self._files = FileBatches(repo.index, self._publish)  # file objects, flushed early
        self._mutex = threading.Lock()
        self._local = threading.local()  # this thread's staging directory
        self._stage_dirs = 0
        self._lock_cm = repo.lock(exclusive=False)
        self._lock_cm.__enter__()
        try:
            tmp = ensure_tmp(repo.path)  # Repository.transaction made it; a direct caller may not
            repo.content.note_umask()  # objects are created with their bits, under this umask
            remove_abandoned_staging(tmp)
            self._budget = self._space_budget()
            self.staging, self._staging_fd = new_staging(tmp)
            self._staging_owner = os.getpid()
            self._staging_str = str(self.staging)
        except BaseException:
            self._lock_cm.__exit__(None, None, None)
            raise
        self._done = False

    def _space_budget(self) -> int:
        """Bytes this transaction may still stage before the free-space floor."""
        self._block = 4096
        if not self._repo.space.enabled:
            return 1 << 62
        vfs = os.statvfs(self._repo.path)
        total, free = vfs.f_blocks * vfs.f_frsize, vfs.f_bavail * vfs.f_frsize
        self._block = vfs.f_frsize or 4096
        return free - self._repo.space.reserve(total)

    def _reserve(self, size: int) -> None:
        blocks = (size + self._block - 1) // self._block + 1
        with self._mutex:
            self._budget -= blocks * self._block
            exceeded = self._budget < 0
        if exceeded:
            raise OutOfSpaceError(
                f"{self._repo.space.describe()} would be exceeded, at least {size} bytes "
                "requested; nothing was committed"
            )

    # ----- context manager -------------------------------------------------
    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()

    # ----- writing objects -------------------------------------------------
    def _stage_path(self, object_id: ObjectId, kind: ObjectType) -> str:
        return f"{self._stage_dir()}/{object_id.hex()}.{kind.suffix}"

    def _stage_dir(self) -> str:
        """This thread's own directory in staging, made on its first write.

        Creating a file holds its directory's lock while the filesystem allocates the
        inode, which ext4 makes slow after many deletions (it skips recently freed
        inodes): writers sharing one directory queue there (and spin, burning CPU), so
        each thread creates its files in a directory of its own.
        """
        directory: str | None = getattr(self._local, "stage_dir", None)
        if directory is None:
            with self._mutex:
                self._stage_dirs += 1
                directory = f"{self._staging_str}/w{self._stage_dirs}"
            with space_errors(_NOTHING_COMMITTED):
                os.mkdir(directory)
            self._local.stage_dir = directory
        return directory

    def _record(self, object_id: ObjectId, record: ObjectRecord, staged: str | None) -> None:
        relpath = self._repo.content.relpath(object_id, record.kind)
        if record.kind is ObjectType.FILE:
            self._files.add_object(object_id, record, staged, relpath)
            return
        with self._mutex:
            self._batch.objects[object_id] = record
            if staged is not None:
                self._staged.append((staged, relpath))

    def release_index_pages(self) -> None:
        """Let the index pages this process has read leave its resident set (a long scan
        calls it now and then; store/index.py, Index.release_pages, says why)."""
        self._repo.index.release_pages()

    @property
    def flushes(self) -> int:
        """How many times file objects were published before the commit point so far.
        A reader of the index kept open across a flush holds the pages it replaced
        (the index file grows): long scans open a new snapshot when this changes."""
        return self._files.flushes

    def write_file(self, header: FileHeader, data: bytes, where: str = "") -> ObjectId:
        """Store a file object whose content is in memory; return its id."""
        header = self._repo.mode.admit_file(header, where or "file")
        encoded = header.encode()
        hasher = blake3.blake3(encoded)
        hasher.update(data)
        object_id = ObjectId(hasher.digest())
        if self._files.claim(object_id):
            self._reserve(len(data))
            target = self._stage_path(object_id, ObjectType.FILE)
            with space_errors(_NOTHING_COMMITTED):
                self._repo.content.stage(target, header, [data], encoded)
            self._record(object_id, ObjectRecord.for_file(len(data), encoded), target)
        return object_id

    def write_verified_file(
        self, verified: VerifiedFile, where: str = "", missing: bool = False
    ) -> ObjectId:
        """Store a file object that store/filez.py's decode_filez has just verified:
        its id was computed from these very bytes, so they are not hashed again.
        ModePolicyError if this repository's mode would keep it as another object
        (bare-user-only drops ownership and xattrs). ``missing``: the caller found it
        missing from the index already (a pull's walk): the index is not asked again
        (each look-up lets other threads take the interpreter's lock, and waits to get
        it back)."""
        where = where or f"file object {verified.object_id.hex()}"
        header = verified.header
        if self._repo.mode.admit_file(header, where) != header:
            raise ModePolicyError(
                f"{where} carries ownership or xattrs, which a {self._repo.mode.value} "
                "repository does not keep: it cannot hold this commit as it is",
                path=where,
            )
        object_id, data = verified.object_id, verified.content
        if self._files.claim(object_id, ask_index=not missing):
            self._reserve(len(data))
            target = self._stage_path(object_id, ObjectType.FILE)
            with space_errors(_NOTHING_COMMITTED):
                self._repo.content.stage(target, header, [data], verified.header_bytes)
            record = ObjectRecord.for_file(len(data), verified.header_bytes)
            self._record(object_id, record, target)
        return object_id

    def link_file(
        self, object_id: ObjectId, header: FileHeader, size: int, source: str | int
    ) -> bool:
        """Store file object ``object_id`` by hardlinking ``source``: the object's file
        in another repository of this same mode and filesystem, verified by the caller
        (pull-local), as a path (never followed if a symlink) or an open descriptor (that
        very inode, whatever its path holds now). False if this repository holds the
        object already."""
        if not self._files.claim(object_id):
            return False
        target = self._stage_path(object_id, ObjectType.FILE)
        try:
            if isinstance(source, int):
                _link_descriptor(source, target)
            else:
                os.link(source, target, follow_symlinks=False)
        except OSError:
            self._files.release(object_id)  # the caller copies it instead
            raise
        self._record(object_id, ObjectRecord.for_file(size, header.encode()), target)
        return True

    def write_file_chunks(
        self, header: FileHeader, read: Callable[[], Iterable[bytes]], where: str = ""
    ) -> ObjectId:
        """Store a large file: ``read()`` yields its content and is called once or twice.

        The first pass hashes; only a new object is read again to be stored, and that
        second pass must hash the same, or the source changed while being committed.
        """
        header = self._repo.mode.admit_file(header, where or "file")
        hasher = header.hasher()
        size = 0
        for chunk in read():
            hasher.update(chunk)
            size += len(chunk)
        object_id = ObjectId(hasher.digest())
        if self._files.claim(object_id):
            self._reserve(size)
            target = self._stage_path(object_id, ObjectType.FILE)
            check = header.hasher()

            def copy() -> Iterable[bytes]:
                for chunk in read():
                    check.update(chunk)
                    yield chunk

            with space_errors(_NOTHING_COMMITTED):
                self._repo.content.stage(target, header, copy())
            if check.digest() != object_id:
                raise SourceError(f"{where}: changed while it was being committed")
            self._record(object_id, ObjectRecord.for_file(size, header.encode()), target)
        return object_id

    def write_dirmeta(self, meta: DirMeta, where: str = "") -> ObjectId:
        meta = self._repo.mode.admit_dir(meta, where or "directory")
        return self._write_meta(ObjectType.DIRMETA, meta.encode())

    def write_dirtree(self, tree: DirTree) -> ObjectId:
        """Store a dirtree; if it is new, the commit point checks that everything it
        names is there (store/index_write.py, ``_check_new_trees``)."""
        return self._write_meta(ObjectType.DIRTREE, tree.encode())

    def write_commit(self, commit: Commit) -> ObjectId:
        self._require([(commit.tree, ObjectType.DIRTREE), (commit.meta, ObjectType.DIRMETA)])
        object_id = self._write_meta(ObjectType.COMMIT, commit.encode())
        with self._mutex:
            self._batch.commits[object_id] = commit.timestamp
            self._batch.partial_clear.add(object_id)
        return object_id

    def _require(self, object_ids: Iterable[tuple[ObjectId, ObjectType]]) -> None:
        """Note objects a new commit (or signatures) names that this transaction may not
        write (what new trees name is checked from the trees themselves).

        They were found in the index when the transaction looked (or came from the
        stat cache, or from an existing commit's tree), and the commit point checks
        that they are still there: a prune that ran meanwhile must not leave the new
        commit pointing at deleted objects. An existing dirtree stands for everything
        below it (prune removes a tree only with what nothing else needs below it).
        Each is named with the kind it must have: a tree naming a dirtree as a file
        (from a server, say) is refused, never committed.
        """
        with self._mutex:
            self._batch.required.update(object_ids)

    def _write_meta(self, kind: ObjectType, encoded: bytes) -> ObjectId:
        object_id = digest(encoded)
        if self._files.claim(object_id):
            staged = None
            if self._repo.content.compressed:  # archive: metadata is servable over HTTP too
                staged = self._stage_path(object_id, kind)
                with space_errors(_NOTHING_COMMITTED), open(staged, "xb") as out:
                    out.write(encoded)
            self._record(object_id, ObjectRecord(kind, encoded), staged)
        return object_id

    def set_commitmeta(
        self, commit_id: ObjectId, encoded: bytes, expected: bytes | AnyTarget | None = ANY
    ) -> None:
        """Give a commit of the repository (or of this transaction) these detached
        signatures (store/signing.py's encoding) at the commit point; ``expected``
        makes it a compare-and-swap of what it held (None: none), RefConflictError
        otherwise. Archive mode also serves them as ``objects/XX/REST.commitmeta``,
        renamed in before the commit point (a file that replaces another whole)."""
        self._require([(commit_id, ObjectType.COMMIT)])
        staged = None
        if self._repo.content.compressed:
            staged = f"{self._staging_str}/{commit_id.hex()}.commitmeta"
            with space_errors(_NOTHING_COMMITTED), open(staged, "wb") as out:
                out.write(encoded)
        with self._mutex:
            self._batch.commitmeta[commit_id] = (expected, encoded)
            if staged is not None:
                self._staged.append((staged, commitmeta_relpath(commit_id)))

    # ----- refs and caches --------------------------------------------------
    def set_ref(self, name: str, commit_id: ObjectId | None, expected: ExpectedRef = ANY) -> None:
        """Point ``name`` at ``commit_id`` (None deletes) at the commit point.

        ``expected`` makes it a compare-and-swap: the old value (None for "absent").
        """
        check_ref_name(name)
        self._batch.refs.append(RefUpdate(name, commit_id, expected))

    def put_stat_cache(self, st: os.stat_result, record: StatCacheRecord) -> None:
        """Remember that the source file ``st`` describes is ``record`` (fs/statcache.py
        says when a record may be written): listed with the next flush of file objects,
        or at the commit point. A row listed early may name an object not yet listed (or
        one a prune removes after an abort): the snapshot's stat_cache checks that the
        object is there before it trusts a row."""
        self._files.add_stat_cache(stat_cache_key(st), record.encode())

    # ----- ending -----------------------------------------------------------
    def commit(self) -> None:
        if self._done:
            return
        self._close_readers()  # our snapshots are not needed past this point
        committed = False

        def commit_point(durable: Callable[[], None]) -> None:
            nonlocal committed
            with space_errors(_NOTHING_COMMITTED):
                self._batch.objects.update(self._files.pending.objects)
                self._batch.statcache.update(self._files.pending.statcache)
                self._batch.check_trees = True
                self._repo.index.apply(self._batch, before_commit=durable)
            committed = True
            self._after_commit_point()

        try:
            self._publish([*self._files.staged, *self._staged], commit_point)
        except BaseException as exc:
            if not committed:
                self.abort()
            elif isinstance(exc, KeyboardInterrupt):  # held back to here (store/interrupts.py)
                log.warning("interrupted after the commit point: what was committed is kept")
            raise
        log.debug("committed %d objects at the commit point", len(self._batch.objects))

    def _after_commit_point(self) -> None:
        try:
            if self._repo.content.compressed and self._batch.refs:
                self._repo.write_ref_mirror()
        except OSError as exc:  # the commit is done: say so, never report it as failed
            log.error("the commit is done, but refs/ for HTTP could not be updated: %s", exc)
        finally:
            self._finish()

    def _publish(self, staged_files: list[tuple[str, str]], list_them: ListThem) -> None:
        """Move staged files into objects/, make their content and names durable with one
        flush, and ``list_them`` (an LMDB commit, and what must follow it): a Ctrl-C from
        the first move on waits until it has returned, so that it never leaves files in
        objects/ that the index does not list (store/interrupts.py).

        The flush runs in a thread from the last move on while ``list_them`` checks and
        writes its rows; it calls the function it is given right before its LMDB commit,
        which waits for the flush: the rows become visible only after the flush, as with
        a flush in line, and the work of the write overlaps the disk's (an update pull's
        commit point, docs/decisions.md "The update pull, session 15").

        A staged file is hard-linked in before the flush, never over a name already
        there: until the index lists it, a file in objects/ is trusted by nobody
        (readers, fsck and prune go by the index), so a crash before the flush ends
        leaves unlisted files that may be empty, which the next write of the same object
        replaces and prune removes. A name already taken (another writer's copy of the
        same object, listed or about to be; a commit's signatures replaced in archive
        mode, which a web server serves from the file) is replaced only after the flush,
        by a rename whose directory is then synced: a file the index lists, or a server
        serves, never names content not yet on disk (review18 R18-1)."""
        with interrupts_held():
            if not staged_files:
                list_them(_nothing_to_wait_for)
                return
            if not self._repo.fsync:  # nothing is promised to survive a crash
                with space_errors(_NOTHING_COMMITTED):
                    self._rename_in(staged_files)
                list_them(_nothing_to_wait_for)
                return
            with space_errors(_NOTHING_COMMITTED):
                taken = self._link_in(staged_files)
            staging = self.staging
            flush = InBackground(lambda: syncfs(staging))

            def durable() -> None:
                with space_errors(_NOTHING_COMMITTED):
                    flush.wait()
                    self._replace_taken(taken)

            try:
                list_them(durable)
            finally:
                flush.join()  # list_them failed before it waited: no flush left running

    def _rename_in(self, staged_files: list[tuple[str, str]]) -> None:
        objects = str(self._repo.path / "objects")
        for staged, relpath in staged_files:
            os.rename(staged, f"{objects}/{relpath}")

    def _link_in(self, staged_files: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Link each staged file in under its name; those whose name is taken are
        returned (staged path, target), to be renamed in after the flush."""
        objects = str(self._repo.path / "objects")
        taken: list[tuple[str, str]] = []
        for staged, relpath in staged_files:
            target = f"{objects}/{relpath}"
            try:
                os.link(staged, target, follow_symlinks=False)  # fails on a taken name
            except OSError:  # taken (EEXIST), or no hard links here: renamed after the flush
                taken.append((staged, target))
            else:
                os.unlink(staged)
        return taken

    def _replace_taken(self, taken: list[tuple[str, str]]) -> None:
        for staged, target in taken:
            os.rename(staged, target)
        directories = {os.path.dirname(target) for _, target in taken}
        if len(directories) > _FSYNC_DIRS_AT_MOST:
            syncfs(self.staging)  # one flush, not one per directory
        elif directories:
            fsync_dirs([Path(directory) for directory in directories])

    def abort(self) -> None:
        if not self._done:
            self._finish()

    def _close_readers(self) -> None:
        self._files.close_readers()
        self._local = threading.local()

    def _finish(self) -> None:
        """Remove the staging directory, let go of its fd and of the repository's lock:
        those two whatever happens (an interrupt inside the rmtree left them held, and a
        later exclusive lock in the same process waited on its own shared one, attack11.md
        2); a staging directory left is removed by the next transaction."""
        self._done = True
        try:
            self._close_readers()
            _remove_staging(self.staging)
        finally:
            try:
                unlock_and_close(self._staging_fd, self._staging_owner)
            finally:
                self._lock_cm.__exit__(None, None, None)


def _remove_staging(staging: Path) -> None:
    """Remove a staging directory: plain rmdirs once a commit has renamed everything out
    of it and of its writers' directories (as usual), shutil's rmtree for what an abort
    leaves (shutil is imported only then: with the bz2 and lzma it loads, ~6 M
    instructions of every small pull)."""
    try:
        with os.scandir(staging) as entries:
            for entry in entries:
                os.rmdir(entry.path)  # a file here: NotADirectoryError, so the rmtree
        os.rmdir(staging)
    except OSError:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)


def commitmeta_relpath(commit_id: bytes) -> str:
    """``ab/cdef….commitmeta``: where archive mode serves a commit's signatures."""
    hexid = commit_id.hex()
    return f"{hexid[:2]}/{hexid[2:]}.commitmeta"


def _link_descriptor(fd: int, target: str) -> None:
    """Hardlink the inode open as ``fd`` at ``target``: linkat of /proc/self/fd/N with
    AT_SYMLINK_FOLLOW (AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH). It needs a dir
    fd: Python 3.11 calls link(2) without one, which links the /proc symlink itself."""
    fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(str(fd), target, src_dir_fd=fds, follow_symlinks=True)
    finally:
        os.close(fds)
