"""A repository on disk: its layout, its mode, and reading what it holds.

Layout::

    REPO/config        INI: [core] repo_version, mode, fsync
    REPO/index/        the LMDB index (store/index.py documents it)
    REPO/objects/XX/   content objects (and, in archive mode, metadata objects too)
    REPO/refs/heads/   archive mode only: a plain-file mirror of the refs for HTTP
    REPO/tmp/          staging directories of running transactions
    REPO/              flock()ed itself: the repository lock (writers shared, prune
                       exclusive); a ``lock`` file of older versions is unused

Beside it: store/config_file.py (reading and writing REPO/config),
store/repo_layout.py (making the directories, keeping them private) and
store/ref_mirror.py (archive mode's refs/ for HTTP).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO, TypeVar

from store.config_file import (
    REPO_VERSION,
    core_settings,
    parse_config,
    read_config,
    read_config_file,
    settings_of,
    write_config,
)
from store.content import ArchiveStore, ContentStore, content_store
from store.errors import (
    CorruptObjectError,
    FormatError,
    InvalidRefNameError,
    ObjectMissingError,
    ReadOnlyRepositoryError,
    RefConflictError,
    RefExistsError,
    RefNotFoundError,
    RepoExistsError,
    UsageError,
)
from store.framed import FramedContent
from store.ids import ObjectId, ObjectType
from store.index import ANY, Access, ExpectedRef, Index, ObjectRecord
from store.inode_cache import FILE_NAME as INODES_SAVED
from store.inodes import ObjectInodes
from store.locking import ensure_tmp, repo_lock
from store.modes import RepoMode
from store.names import check_ref_name
from store.objects import Commit, DirMeta, DirTree, FileHeader, FileStat
from store.ref_mirror import write_ref_mirror
from store.repo_layout import lay_out, make_private, writable
from store.snapshot import Snapshot
from store.space import SpacePolicy
from store.transaction import Transaction
from store.verify import verified

# The config functions live in store/config_file.py; others import them from here too.
__all__ = [
    "REPO_VERSION",
    "Repository",
    "SpacePolicy",
    "core_settings",
    "parse_config",
    "read_config",
    "read_config_file",
    "settings_of",
    "write_config",
]


class Repository:
    """An open repository. Reading is thread-safe; writing goes through transaction().

    Callers outside the store use the methods below, never ``index`` or ``content``
    (the LMDB index and the mode's object files, the store's own business): a read
    snapshot for reads that belong together, refs with compare-and-swap, and
    per-mode access to object files (``stores_compressed``, ``object_path``,
    ``open_file_fd``, ``verify_file``).
    """

    def __init__(
        self,
        path: Path,
        mode: RepoMode,
        fsync: bool,
        access: Access = Access.READ_WRITE,
        space: SpacePolicy | None = None,
    ) -> None:
        # Absolute once, here: objects, staging and refs are reached by path, so a
        # relative one would follow the program's later chdir into another repository
        # (attack23 14); the index alone is an fd. Not resolved: symlinks stay as given.
        path = Path(os.path.abspath(path))
        self.path = path
        self.mode = mode
        self.fsync = fsync
        self.space = space or SpacePolicy()
        self.content: ContentStore = content_store(mode, path / "objects")
        self.index = Index(path / "index", access)

    @property
    def read_only(self) -> bool:
        """True when this process may read the repository but not write it."""
        return self.index.read_only

    # ----- life cycle ---------------------------------------------------------
    @classmethod
    def init(cls, path: str | os.PathLike[str], mode: RepoMode) -> Repository:
        """Create a repository at ``path`` (absent or an empty directory)."""
        if "\0" in os.fspath(path):
            raise UsageError(f"{str(path)!r}: no path holds NUL; no repository made there")
        path = Path(path)
        mode.require_privileges()
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise RepoExistsError(f"{path}: exists and is not an empty directory")
        lay_out(path, mode)
        return cls(path, mode, fsync=True, access=Access.CREATE)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Repository:
        """Open an existing repository: its config must be sound and its index present."""
        path = Path(path)
        mode, core = read_config(path)
        space, fsync = core_settings(path, core)
        access = Access.READ_WRITE if writable(path) else Access.READ_ONLY
        return cls(path, mode, fsync=fsync, access=access, space=space)

    def close(self) -> None:
        """Close the index; the repository is not to be used afterwards. One dropped
        unclosed is closed when collected (with a ResourceWarning), but each open index
        holds 1 TiB of address space until then: close it, or use ``with``."""
        self.index.close()

    def refresh(self) -> None:
        """Let go of the index pages this process has mapped (they stay in the page
        cache) and map it afresh: call it with no snapshot or transaction open, as the
        only user of this repository in the process (RuntimeError otherwise).
        :meth:`release_index_pages` does as much with snapshots open (what the mount
        daemon and long walks use)."""
        self.index.remap()

    def release_index_pages(self) -> None:
        """Let go of the index pages this process has mapped, with snapshots open or
        not (they stay in the page cache; a later read maps them again): for a
        long-lived reader that walks much of the index, the mount daemon."""
        self.index.release_pages()

    def take_over_index_page_releases(self) -> None:
        """From now on this process lets go of the index's pages only when it calls
        :meth:`release_index_pages`: point reads no longer count towards the index's own
        budget (store/index_env.py, PageBudget). For
        a caller with a budget of its own (the mount daemon: SAPWOOD_MOUNT_INDEX_MIB
        raised to keep a large index mapped is kept to)."""
        self.index.take_over_page_releases()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lock(self, exclusive: bool, wait: float | None = None) -> AbstractContextManager[None]:
        """The repository lock: shared for writers and fsck, exclusive for prune and repair.
        ``wait``: give up after this many seconds (RepoBusyError); None: wait for it."""
        return repo_lock(self.path, exclusive, wait)

    def transaction(self) -> Transaction:
        """A new transaction: ``with repo.transaction() as txn:`` stages objects and ref
        moves, committed together when the block ends without an error."""
        self.mode.require_privileges()
        self.require_writable()
        ensure_tmp(self.path)
        make_private(self.path, self.mode)  # repositories made before this rule
        return Transaction(self)

    def require_writable(self) -> None:
        """ReadOnlyRepositoryError unless this process may write the repository."""
        if self.read_only:
            raise ReadOnlyRepositoryError(
                f"{self.path}: this repository is read-only for you; nothing was written"
            )

    @contextmanager
    def snapshot(self, after: Snapshot | None = None) -> Iterator[Snapshot]:
        """One consistent view of refs, commits, objects and the stat cache (store/snapshot.py).

        ``after``: an earlier snapshot that this one renews within one transaction (a
        long commit renews its snapshot after each flush): its listing of the object
        files' inodes is kept, not made again. Nothing is removed while a transaction
        runs (prune and fsck --delete wait for it), objects it adds cannot be the links
        of an older checkout, and every object found is checked in this snapshot."""
        objects = str(self.content.objects_dir)
        if after is not None:
            inodes = after.object_inodes
        else:
            saved = None if self.read_only else str(self.path / "index" / INODES_SAVED)
            inodes = None if self.content.compressed else ObjectInodes(self.mode, objects, saved)
        with self.index.reader() as reader:
            snap = Snapshot(reader, inodes)
            try:
                yield snap
            finally:
                snap.end()

    # ----- object files, per mode ---------------------------------------------------
    @property
    def stores_compressed(self) -> bool:
        """True in archive mode: object files hold compressed content, so they can be
        neither hardlinked nor opened as plain files (``open_file_fd``); read them with
        ``open_file``. In the other modes an object's file holds its content as is."""
        return self.content.compressed

    def object_path(self, object_id: ObjectId, kind: ObjectType = ObjectType.FILE) -> str:
        """Where an object lives on disk: a file object's file in every mode (compressed
        in archive mode), a metadata object's in archive mode only (elsewhere that path
        never exists). Not checked, nor opened: the file is untrusted (see open_file_fd)."""
        if kind is ObjectType.FILE:
            return self.content.pathstr(object_id)
        return str(self.content.path(object_id, kind))

    def verify_file(
        self,
        object_id: ObjectId,
        header: FileHeader | None = None,
        size: int | None = None,
        between_chunks: Callable[[], None] | None = None,
    ) -> str | None:
        """What is wrong with a stored file object, or None if it is sound: its content
        re-hashed in full, and what its file records besides (ownership, mode, the
        bare-user xattr) compared with the index. ``header`` and ``size``: the recorded
        ones, when the caller has them already (saves an index lookup). ``between_chunks``
        is called after each MiB hashed: what it raises gives the check up."""
        if header is None or size is None:
            header, size = self.read_file_header(object_id)
        return self.content.verify(object_id, header.encode(), size, between_chunks)

    # ----- reading objects ------------------------------------------------------
    def _record(self, object_id: ObjectId, kind: ObjectType) -> ObjectRecord:
        with self.index.reader() as reader:
            record = reader.object(object_id)
        if record is None:
            raise ObjectMissingError(
                f"{kind.suffix} object {object_id.hex()} is missing", object_id=object_id
            )
        if record.kind is not kind:
            raise CorruptObjectError(
                f"object {object_id.hex()} is a {record.kind.suffix}, not a {kind.suffix}",
                object_id=object_id,
            )
        return record

    def has_object(self, object_id: ObjectId) -> bool:
        """Whether the index records an object of this id (of any type)."""
        with self.index.reader() as reader:
            return reader.has_object(object_id)

    def read_payload(self, object_id: ObjectId, kind: ObjectType) -> bytes:
        """An object as the index holds it, not decoded: a commit's, dirtree's or
        dirmeta's encoding (its id was checked when it was written), for a reader that
        needs a part of it only (a path's history finds one name in each dirtree); a
        file object's is its size and header. ObjectMissingError, or CorruptObjectError
        for an object of another type."""
        return self._record(object_id, kind).payload

    def read_commit(self, object_id: ObjectId) -> Commit:
        """A commit object, decoded (ObjectMissingError, CorruptObjectError otherwise)."""
        return _decoded(Commit.decode, self.read_payload(object_id, ObjectType.COMMIT), object_id)

    def read_dirtree(self, object_id: ObjectId) -> DirTree:
        """A dirtree object (a directory's entries), decoded."""
        return _decoded(DirTree.decode, self.read_payload(object_id, ObjectType.DIRTREE), object_id)

    def read_dirmeta(self, object_id: ObjectId) -> DirMeta:
        """A dirmeta object (a directory's owner, mode and xattrs), decoded."""
        return _decoded(DirMeta.decode, self.read_payload(object_id, ObjectType.DIRMETA), object_id)

    def is_partial(self, commit_id: ObjectId) -> bool:
        """True if objects this commit needs were deleted (fsck with delete) and not
        restored."""
        with self.index.reader() as reader:
            return reader.is_partial(commit_id)

    def read_file_header(self, object_id: ObjectId) -> tuple[FileHeader, int]:
        """The header and the content size of a file object."""
        record = self._record(object_id, ObjectType.FILE)
        header = _decoded(FileHeader.decode, record.file_header_bytes, object_id)
        return header, record.file_size

    def read_file_headers(self, object_ids: list[ObjectId]) -> list[tuple[FileHeader, int]]:
        """``read_file_header`` for many objects in one index snapshot (checkout, mount)."""
        found = []
        with self.index.reader() as reader:
            for object_id in object_ids:
                record = reader.object(object_id)
                if record is None or record.kind is not ObjectType.FILE:
                    raise ObjectMissingError(
                        f"file object {object_id.hex()} is missing", object_id=object_id
                    )
                header = _decoded(FileHeader.decode, record.file_header_bytes, object_id)
                found.append((header, record.file_size))
        return found

    def read_file_stats(self, object_ids: Sequence[ObjectId]) -> list[FileStat]:
        """What stat shows of many file objects, in one index snapshot (mount listings)."""
        found = []
        with self.index.reader() as reader:
            for object_id in object_ids:
                try:
                    stats = reader.file_stat(object_id)
                except FormatError as exc:
                    raise CorruptObjectError(
                        f"object {object_id.hex()}: {exc}", object_id=object_id
                    ) from exc
                if stats is None:
                    raise ObjectMissingError(
                        f"file object {object_id.hex()} is missing", object_id=object_id
                    )
                found.append(stats)
        return found

    def open_file(self, object_id: ObjectId) -> BinaryIO:
        """The content of a file object (empty for a symlink), as a stream.

        The object file is never followed through a symlink nor opened if it is not
        a regular file of the recorded size. The bytes are hashed as they are read
        (there is no way around it), and reading to the end raises
        CorruptObjectError if they were not the object's: a caller that must not act
        on wrong bytes before the end reads everything first (``read_file``).
        """
        record = self._record(object_id, ObjectType.FILE)
        return self.open_recorded_file(object_id, record.file_header_bytes, record.file_size)

    def open_recorded_file(self, object_id: ObjectId, header_bytes: bytes, size: int) -> BinaryIO:
        """``open_file`` with the header and size the caller read from this index: no
        index lookup (the mount's worker threads, which must not share its snapshots)."""
        header = _decoded(FileHeader.decode, header_bytes, object_id)
        stream = self.content.open_content(object_id, header, size)
        if header.is_symlink:  # no content: its target is in the header
            return stream
        return verified(stream, object_id, header_bytes, size)

    def read_file(self, object_id: ObjectId) -> bytes:
        """The whole, verified content of a file object."""
        with self.open_file(object_id) as stream:
            return stream.read()

    def open_file_fd(self, object_id: ObjectId, size: int | None = None) -> int:
        """An fd of an uncompressed object's file: a regular file of the recorded size,
        never a symlink's target (not re-hashed; store.verify.ContentCheck does that).

        ``size``: the recorded size, when the caller read it from this index already
        (the mount's listings, checkout's headers); it saves an index lookup per file.
        """
        if size is None:
            size = self._record(object_id, ObjectType.FILE).file_size
        return self.content.open_fd(object_id, size)

    def open_framed_file(self, object_id: ObjectId, size: int) -> FramedContent | None:
        """An archive object's content for reading at random, a 1 MiB frame at a time
        (store/framed.py: ``verify`` it, or ``locate`` its frames if this very file was
        verified before, then read); None for an object written before zstd (read it
        with open_file). ``size``: the recorded size; no index lookup (thread-safe)."""
        if not isinstance(self.content, ArchiveStore):
            raise TypeError("only archive objects are framed: use open_file_fd")
        return self.content.open_framed(object_id, size)

    # ----- refs -----------------------------------------------------------------
    def refs(self) -> dict[str, ObjectId]:
        """Every ref and the commit it points at."""
        with self.index.reader() as reader:
            return reader.refs()

    def ref(self, name: str) -> ObjectId | None:
        """The commit ref ``name`` points at, or None if there is no such ref."""
        with self.index.reader() as reader:
            return reader.ref(name)

    def set_ref(self, name: str, target: ObjectId | None, expected: ExpectedRef = ANY) -> None:
        """Point ref ``name`` at commit ``target`` (None deletes it), in a transaction of
        its own.

        ``expected`` makes it a compare-and-swap: the commit the ref must hold at the
        moment it moves (None: the ref must not exist); otherwise RefConflictError and
        nothing moves. The default, ``ANY``, moves it whatever it holds.
        """
        with self.transaction() as txn:
            txn.set_ref(name, target, expected)

    def create_ref(self, name: str, target: ObjectId) -> None:
        """Create ref ``name`` at commit ``target``; RefExistsError if it exists already
        (also when another writer creates it first)."""
        if self.ref(name) is not None:
            raise _ref_exists(name)
        try:
            self.set_ref(name, target, expected=None)
        except RefConflictError:
            raise _ref_exists(name) from None

    def delete_ref(self, name: str) -> None:
        """Delete ref ``name``; RefNotFoundError if there is none. The ref is deleted
        only if it still holds what it held when looked up: RefConflictError if another
        writer moved it meanwhile."""
        current = self.ref(name)
        if current is None:
            raise RefNotFoundError(f"no ref {_shown_ref(name)}", rev=name)
        self.set_ref(name, None, expected=current)

    def write_ref_mirror(self) -> None:
        """Archive mode: rewrite refs/heads/ and refs/remotes/ from the index, for HTTP."""
        write_ref_mirror(self.path / "refs", self.refs())


def _shown_ref(name: str) -> str:
    """A ref name for a message: as it is when valid, else quoted and escaped (a name
    the caller typed, or a damaged index holds, may hold anything)."""
    try:
        return check_ref_name(name)
    except InvalidRefNameError:
        return repr(name)


def _ref_exists(name: str) -> RefExistsError:
    return RefExistsError(f"ref {_shown_ref(name)} exists; delete it first", name=name)


_T = TypeVar("_T")


def _decoded(decode: Callable[[bytes], _T], payload: bytes, object_id: ObjectId) -> _T:
    try:
        return decode(payload)
    except FormatError as exc:
        raise CorruptObjectError(f"object {object_id.hex()}: {exc}", object_id=object_id) from exc
