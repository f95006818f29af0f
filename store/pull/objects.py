"""Taking objects from outside (an HTTP body, a delta part, another repository's
file): each is verified against its id before anything is stored.

Metadata objects are their canonical encodings: hashed, then decoded (a strict
decode: a tree with a bad name is refused here). File objects come as ``.filez``
payloads (store/filez.py decodes and verifies them), and are stored through a
transaction in the local repository's mode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, cast

from store.durability import space_errors, temporary_file
from store.errors import CorruptObjectError, FormatError, ModePolicyError
from store.filez import VerifiedFile, decode_filez
from store.ids import ObjectId, ObjectType, digest
from store.modes import RepoMode
from store.objects import Commit, DirMeta, DirTree, FileHeader, MetaObject
from store.transaction import SMALL_FILE, Transaction

_DECODERS: dict[ObjectType, Callable[[bytes], MetaObject]] = {
    ObjectType.COMMIT: Commit.decode,
    ObjectType.DIRTREE: DirTree.decode,
    ObjectType.DIRMETA: DirMeta.decode,
}
_READ = 1 << 20
_NOTHING_COMMITTED = "nothing was committed"


def check_meta_digest(object_id: ObjectId, kind: ObjectType, data: bytes, source: str) -> None:
    """CorruptObjectError (naming ``source``) unless ``data`` hashes to ``object_id``."""
    if digest(data) != object_id:
        raise CorruptObjectError(
            f"{source}: {kind.suffix} object {object_id.hex()}: the bytes are not the object "
            "(blake3 differs)",
            object_id=object_id,
        )


def verified_meta(object_id: ObjectId, kind: ObjectType, data: bytes, source: str) -> MetaObject:
    """The metadata object ``data`` encodes, if it is object ``object_id`` of ``kind``;
    CorruptObjectError (naming ``source``) otherwise."""
    check_meta_digest(object_id, kind, data, source)
    try:
        return _DECODERS[kind](data)
    except FormatError as exc:
        raise CorruptObjectError(
            f"{source}: {kind.suffix} object {object_id.hex()}: {exc}", object_id=object_id
        ) from exc


class _Spool:
    """Where decode_filez writes a large object's content: an unlinked file in the
    repository's tmp/, made at the first write. A small object (held in memory) never
    writes, so it never makes one: a SpooledTemporaryFile made for every object cost
    a first pull ~10 us an object (docs/decisions.md, "Pull's storage path")."""

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._file: BinaryIO | None = None

    def write(self, data: bytes) -> int:
        """A full disk is said as one (OutOfSpaceError), not a bare OSError (attack15 4)."""
        with space_errors(_NOTHING_COMMITTED):
            if self._file is None:
                self._file = temporary_file(self._directory)
            return self._file.write(data)

    def chunks(self) -> Iterator[bytes]:
        if self._file is None:
            return
        self._file.seek(0)
        while chunk := self._file.read(_READ):
            yield chunk

    def close(self) -> None:
        """Let the file go (unlinked: nothing stays); a flush that fails on a full disk
        as it closes must not hide the error that ended the decoding."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()


class DecodedContent:
    """A verified file object's header and content: held in memory when small (then
    stored without hashing it again), spooled to disk when large."""

    def __init__(
        self, header: FileHeader, size: int, spool: _Spool, verified: VerifiedFile | None
    ) -> None:
        self.header = header
        self.size = size
        self._spool = spool
        self._verified = verified

    def chunks(self) -> Iterator[bytes]:
        return self._spool.chunks()

    def close(self) -> None:
        self._spool.close()

    def store(self, txn: Transaction, object_id: ObjectId, mode: RepoMode) -> None:
        """Write the object in ``txn``; ModePolicyError if the local mode would keep it
        as another object (bare-user-only drops ownership and xattrs). The pull found
        it missing from the index (the walk, the delta's held files): small ones are
        stored without asking the index again (Transaction.write_verified_file)."""
        where = f"file object {object_id.hex()}"
        if self._verified is not None:  # small: what decode_filez hashed, in memory
            if self._verified.object_id != object_id:
                raise CorruptObjectError(f"{where} was decoded as another", object_id=object_id)
            txn.write_verified_file(self._verified, where, missing=True)
            return
        if mode.admit_file(self.header, where) != self.header:
            raise ModePolicyError(
                f"{where} carries ownership or xattrs, which a {mode.value} repository "
                "does not keep: it cannot hold this commit as it is",
                path=where,
            )
        stored = txn.write_file_chunks(self.header, self.chunks, where)
        if stored != object_id:  # verified above: only a change of the header could do it
            raise CorruptObjectError(f"{where} was stored as {stored.hex()}", object_id=object_id)


def decoded_filez(
    body: BinaryIO, object_id: ObjectId, max_size: int, spool_dir: str
) -> DecodedContent:
    """Decode and verify a ``.filez`` payload read from ``body``; CorruptObjectError
    unless it is exactly object ``object_id``."""
    spool = _Spool(spool_dir)
    try:
        out = cast(BinaryIO, spool)  # only written to
        decoded = decode_filez(body, object_id, out=out, max_size=max_size, keep=SMALL_FILE)
    except BaseException:
        spool.close()
        raise
    return DecodedContent(decoded.header, decoded.size, spool, decoded.verified)
