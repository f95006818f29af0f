"""Static deltas: the objects that turn commit FROM into TO (or all of TO) as a few files.

A client that finds a delta in the summary fetches its superblock and parts (a few
large requests) instead of thousands of small objects. Every object in a part is in
the form of its HTTP file (``.filez`` for files, the exact encoding for metadata), so
a reader verifies each exactly as it verifies a loose object
(``store.filez.decode_filez``, ``decode_metadata``).

On disk and over HTTP: ``deltas/TO/`` or ``deltas/FROM-TO/`` (hex ids), holding
``superblock`` and the parts ``0``, ``1``, ... Superblock encoding (docs/format.md)::

    'D' 01  u8 has_from  [id from]  id to
            u32 p  p x u64 part size
            u32 n  n x (id object, u8 kind tag, u32 part, u64 offset, u64 length)

Entries are in part order, and within a part they cover it from offset 0 to its end
with no gap or overlap (a part is the concatenation of its objects); no object is
listed twice. A delta from FROM holds only what FROM's commit and tree do not.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from store import filez
from store.delta_work import WorkDir, remove_dead_old, remove_leftovers
from store.durability import fsync_dir, temporary_file
from store.encoding import Reader, Writer
from store.errors import CorruptObjectError, FormatError, ObjectMissingError, UsageError
from store.ids import ID_BYTES, ObjectId, ObjectType
from store.index import IndexReader
from store.record import Frozen
from store.repo import Repository
from store.summary import DELTAS_DIR, SUPERBLOCK_FILE, delta_name
from store.verify import open_object_file

if TYPE_CHECKING:
    from store.reachability import Reachable

# Generating a delta needs shutil and store.reachability (dataclasses, with inspect and
# ast): imported where it is done, never by a pull that applies one (~24 M instructions
# of an update pull's ~330 M, session 14).

log = logging.getLogger(__name__)
PART_TARGET = 32 << 20  # bytes per part; an object larger than this has a part of its own
MAX_SUPERBLOCK_BYTES = 256 << 20
_TAG = b"D"
_VERSION = 1
_ENTRY_BYTES = ID_BYTES + 1 + 4 + 8 + 8
_U64 = struct.Struct(">Q")
_KINDS = {kind.value: kind for kind in ObjectType}
_META_ORDER = (ObjectType.COMMIT, ObjectType.DIRMETA, ObjectType.DIRTREE)


class DeltaEntry(Frozen):
    """One object of a delta: where its payload lies (part, offset, length)."""

    __slots__ = ("kind", "length", "object_id", "offset", "part")

    object_id: ObjectId
    kind: ObjectType
    part: int
    offset: int
    length: int

    def __init__(
        self, object_id: ObjectId, kind: ObjectType, part: int, offset: int, length: int
    ) -> None:
        object.__setattr__(self, "object_id", object_id)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "part", part)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "length", length)


class Superblock(Frozen):
    """What a delta holds: ``from_id`` (None: from nothing) to ``to_id``, the size of
    each part, and every object with its place."""

    __slots__ = ("entries", "from_id", "part_sizes", "to_id")

    from_id: ObjectId | None
    to_id: ObjectId
    part_sizes: tuple[int, ...]
    entries: tuple[DeltaEntry, ...]

    def __init__(
        self,
        from_id: ObjectId | None,
        to_id: ObjectId,
        part_sizes: tuple[int, ...],
        entries: tuple[DeltaEntry, ...],
    ) -> None:
        object.__setattr__(self, "from_id", from_id)
        object.__setattr__(self, "to_id", to_id)
        object.__setattr__(self, "part_sizes", part_sizes)
        object.__setattr__(self, "entries", entries)

    @property
    def parts(self) -> int:
        """How many part files the delta has (``0`` .. ``parts - 1``)."""
        return len(self.part_sizes)

    def encode(self) -> bytes:
        """The canonical encoding (:func:`encode_superblock`)."""
        return encode_superblock(self)


def encode_superblock(superblock: Superblock) -> bytes:
    """The canonical bytes of a superblock; FormatError if it breaks the layout rules."""
    _check_layout(superblock)
    writer = Writer()
    writer.raw(_TAG)
    writer.u8(_VERSION)
    writer.u8(superblock.from_id is not None)
    if superblock.from_id is not None:
        writer.object_id(superblock.from_id)
    writer.object_id(superblock.to_id)
    writer.u32(len(superblock.part_sizes))
    for size in superblock.part_sizes:
        writer.raw(_U64.pack(size))
    writer.u32(len(superblock.entries))
    for entry in superblock.entries:
        writer.object_id(entry.object_id)
        writer.raw(entry.kind.value)
        writer.u32(entry.part)
        writer.raw(_U64.pack(entry.offset))
        writer.raw(_U64.pack(entry.length))
    return writer.getvalue()


def decode_superblock(data: bytes) -> Superblock:
    """A superblock from its bytes; FormatError for anything but a canonical one."""
    if len(data) > MAX_SUPERBLOCK_BYTES:
        raise FormatError(f"a superblock of {len(data)} bytes: more than {MAX_SUPERBLOCK_BYTES}")
    reader = Reader(data, "superblock")
    if reader.raw(1) != _TAG or reader.u8() != _VERSION:
        raise FormatError("not a sapwood delta superblock (bad tag or version)")
    has_from = reader.u8()
    if has_from > 1:
        raise FormatError("superblock: has_from is not 0 or 1")
    from_id = reader.object_id() if has_from else None
    to_id = reader.object_id()
    sizes = tuple(int(_U64.unpack(reader.raw(8))[0]) for _ in range(reader.count(8)))
    entries = []
    for _ in range(reader.count(_ENTRY_BYTES)):
        object_id = reader.object_id()
        kind = _KINDS.get(reader.raw(1))
        if kind is None:
            raise FormatError("superblock: an unknown object kind")
        part = reader.u32()
        offset, length = (int(_U64.unpack(reader.raw(8))[0]) for _ in range(2))
        entries.append(DeltaEntry(object_id, kind, part, offset, length))
    reader.finish()
    superblock = Superblock(from_id, to_id, sizes, tuple(entries))
    _check_layout(superblock)
    return superblock


def _check_layout(superblock: Superblock) -> None:
    """Parts are covered exactly, in order, by their entries; no object twice."""
    sizes = superblock.part_sizes
    if any(size == 0 for size in sizes):
        raise FormatError("superblock: an empty part")
    seen: set[ObjectId] = set()
    part, position = 0, 0
    for entry in superblock.entries:
        if entry.object_id in seen:
            raise FormatError(f"superblock: object {entry.object_id.hex()} is listed twice")
        seen.add(entry.object_id)
        if entry.part != part:
            if entry.part != part + 1 or part >= len(sizes) or position != sizes[part]:
                raise FormatError("superblock: entries do not fill the parts in order")
            part, position = entry.part, 0
        if entry.offset != position or entry.length == 0:
            raise FormatError("superblock: entries do not fill the parts in order")
        position += entry.length
        if part >= len(sizes) or position > sizes[part]:
            raise FormatError("superblock: an entry runs past the end of its part")
    filled = part + 1 == len(sizes) and position == sizes[-1] if superblock.entries else not sizes
    if not filled:
        raise FormatError("superblock: parts that no entries fill")


def iter_delta_objects(
    superblock: Superblock, read_part: Callable[[int], bytes | BinaryIO]
) -> Iterator[tuple[ObjectId, ObjectType, bytes]]:
    """Each object of a delta as (id, kind, payload), in order; ``read_part(i)`` gives
    part ``i``'s bytes, or a seekable binary file holding them (then memory follows
    the largest object, not the part), each asked for once, in order. A part of
    another size than the superblock says is refused (CorruptObjectError). The
    payloads are what the objects' HTTP files hold and are not verified here: verify
    each with ``decode_filez`` or ``decode_metadata``, as a loose object."""
    for entry, payload in iter_delta_entries(superblock, read_part):
        yield entry.object_id, entry.kind, payload.read(entry.length)


def iter_delta_entries(
    superblock: Superblock, read_part: Callable[[int], bytes | BinaryIO]
) -> Iterator[tuple[DeltaEntry, BinaryIO]]:
    """Each entry of a delta with its payload as a stream of exactly ``entry.length``
    bytes, read from the part (nothing is copied whole); a stream is good until the
    next entry is asked for. Parts as in :func:`iter_delta_objects`; a part given as a
    file is closed once its entries are done (or the iteration is)."""
    current, part = -1, cast(BinaryIO, io.BytesIO())
    try:
        for entry in superblock.entries:
            if entry.part != current:
                part.close()
                current = entry.part
                given = read_part(current)
                part = cast(BinaryIO, io.BytesIO(given)) if isinstance(given, bytes) else given
                size = part.seek(0, os.SEEK_END)
                if size != superblock.part_sizes[current]:
                    raise CorruptObjectError(
                        f"delta part {current}: {size} bytes, the superblock says "
                        f"{superblock.part_sizes[current]}"
                    )
            yield entry, cast(BinaryIO, io.BufferedReader(_Slice(part, entry.offset, entry.length)))
    finally:
        part.close()


class _Slice(io.RawIOBase):
    """``length`` bytes of ``part`` from ``offset``, as a stream of their own."""

    def __init__(self, part: BinaryIO, offset: int, length: int) -> None:
        super().__init__()
        self._part = part
        self._position = offset
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        self._part.seek(self._position)
        data = self._part.read(min(len(buffer), self._left))
        buffer[: len(data)] = data
        self._position += len(data)
        self._left -= len(data)
        return len(data)


# ----- generating -----------------------------------------------------------------------
def delta_objects(
    repo: Repository, from_id: ObjectId | None, to_id: ObjectId
) -> list[tuple[ObjectId, ObjectType]]:
    """What a delta from ``from_id`` to ``to_id`` holds: the objects of TO's commit and
    tree that FROM's do not have, metadata first (commit, dirmetas, dirtrees), then files."""
    with repo.index.reader() as reader:
        wanted = _reachable(reader, to_id)
        if from_id is not None:
            have = _reachable(reader, from_id)
            wanted.commits -= have.commits
            wanted.metadata -= have.metadata
            wanted.files -= have.files
        kinds = {}
        for object_id in wanted.metadata:
            record = reader.object(object_id)
            assert record is not None  # walk_commits verified it
            kinds[object_id] = record.kind
    found = [(cid, ObjectType.COMMIT) for cid in sorted(wanted.commits)]
    for kind in _META_ORDER[1:]:
        found += [(oid, kind) for oid in sorted(wanted.metadata) if kinds[oid] is kind]
    return found + [(oid, ObjectType.FILE) for oid in sorted(wanted.files)]


def _reachable(reader: IndexReader, commit_id: ObjectId) -> Reachable:
    from store.reachability import walk_commits

    found = walk_commits(reader, [commit_id], verify=True)
    if found.bad_metadata:
        object_id, problem = next(iter(found.bad_metadata.items()))
        raise CorruptObjectError(
            f"commit {commit_id.hex()} cannot be sent: object {object_id.hex()}: {problem}",
            object_id=object_id,
        )
    return found


def _payload(repo: Repository, object_id: ObjectId, kind: ObjectType) -> BinaryIO:
    """The object's HTTP file, checked, as a stream at its start (memory stays bounded:
    a large file object is read from its file, or compressed into a temporary one)."""
    if kind is not ObjectType.FILE:
        with repo.index.reader() as reader:
            record = reader.object(object_id)
        if record is None:
            raise ObjectMissingError(f"object {object_id.hex()} is missing", object_id=object_id)
        return io.BytesIO(record.payload)
    header, size = repo.read_file_header(object_id)
    if repo.stores_compressed:
        path = repo.object_path(object_id)
        stream = open(open_object_file(path, object_id), "rb")  # noqa: SIM115
        try:
            filez.decode_filez(stream, object_id, out=cast(BinaryIO, _NullSink()), max_size=size)
            stream.seek(0)
        except BaseException:
            stream.close()
            raise
        return stream
    spool = temporary_file(repo.path / "tmp")
    try:
        spool.write(filez.prefix(size, header.encode()))
        with repo.open_file(object_id) as content:  # verified as it is read
            for frame in filez.frames(iter(lambda: content.read(filez.CHUNK), b"")):
                spool.write(frame)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


class _NullSink(io.RawIOBase):
    """Where a payload's content goes when only its verification matters."""

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return len(data)


def generate_delta(
    repo: Repository,
    from_id: ObjectId | None,
    to_id: ObjectId,
    part_size: int = PART_TARGET,
) -> Path:
    """Write the static delta from ``from_id`` (None: from nothing) to ``to_id`` under
    ``REPO/deltas/`` and return its directory; one already there is replaced whole.

    Parts hold up to ``part_size`` bytes (an object larger than that has a part of its
    own). Every object is checked as it is read (a damaged one is never published).
    The summary lists the delta once ``update_summary`` runs.

    It holds the repository lock shared, as a commit or a pull does: a prune (which
    holds it exclusively while it deletes) waits for it, and it waits for a prune
    running, so it never reads objects prune is deleting nor publishes a delta to a
    commit prune has just removed (attack24 2).
    """
    repo.require_writable()
    with repo.lock(exclusive=False):
        return _generate_delta(repo, from_id, to_id, part_size)


def _generate_delta(
    repo: Repository, from_id: ObjectId | None, to_id: ObjectId, part_size: int
) -> Path:
    import shutil  # here: see the imports

    for commit_id in (from_id, to_id):
        if commit_id is not None:
            repo.read_commit(commit_id)  # ObjectMissingError or CorruptObjectError
            if repo.is_partial(commit_id):
                raise UsageError(f"commit {commit_id.hex()} is partial: it cannot be sent")
    if from_id == to_id:
        raise UsageError("a delta from a commit to itself holds nothing")
    root = repo.path / DELTAS_DIR
    root.mkdir(exist_ok=True)
    remove_leftovers(root)
    name = delta_name(from_id, to_id)
    work = WorkDir(root, name)
    try:
        superblock = _write_parts(repo, from_id, to_id, work.path, part_size)
        _write_file(work.path / SUPERBLOCK_FILE, superblock.encode(), repo.fsync)
        final = _publish(root, work, name, repo.fsync)
    except BaseException:
        shutil.rmtree(work.path, ignore_errors=True)
        raise
    finally:
        work.close()
    log.info("delta %s: %d objects in %d parts", name, len(superblock.entries), superblock.parts)
    return final


def _write_parts(
    repo: Repository, from_id: ObjectId | None, to_id: ObjectId, work: Path, part_size: int
) -> Superblock:
    import shutil  # here: see the imports

    entries: list[DeltaEntry] = []
    sizes: list[int] = []
    part: BinaryIO | None = None
    filled = 0

    def close_part() -> None:
        nonlocal part, filled
        if part is not None:
            _finish_file(part, repo.fsync)
            sizes.append(filled)
            part, filled = None, 0

    try:
        for object_id, kind in delta_objects(repo, from_id, to_id):
            with _payload(repo, object_id, kind) as payload:
                length = payload.seek(0, os.SEEK_END)
                payload.seek(0)
                if filled and filled + length > part_size:
                    close_part()
                if part is None:
                    part = open(work / str(len(sizes)), "xb")  # noqa: SIM115
                shutil.copyfileobj(payload, part, 1 << 20)
            entries.append(DeltaEntry(object_id, kind, len(sizes), filled, length))
            filled += length
        close_part()
    finally:
        if part is not None:
            part.close()
    return Superblock(from_id, to_id, tuple(sizes), tuple(entries))


def _finish_file(out: BinaryIO, fsync: bool) -> None:
    if fsync:
        out.flush()
        os.fsync(out.fileno())
    out.close()
    os.chmod(out.name, 0o644)


def _write_file(path: Path, data: bytes, fsync: bool) -> None:
    with open(path, "wb") as out:
        out.write(data)
        if fsync:
            out.flush()
            os.fsync(out.fileno())
    os.chmod(path, 0o644)


_PUBLISH_TRIES = 8  # generates of one delta publishing at the same moment, each a turn


def _publish(root: Path, work: WorkDir, name: str, fsync: bool) -> Path:
    """Rename the finished delta into place; an older one of the same name goes (held
    by ``work``'s lock from before it is renamed .old- until it is removed). Another
    generate of the same delta may publish between the two renames (review21 14): then
    its delta is the older one, and this one takes its place (the same objects)."""
    import shutil  # here: see the imports

    final = root / name
    os.chmod(work.path, 0o755)
    for _ in range(_PUBLISH_TRIES):
        if final.exists():
            work.hold(final)
            shutil.rmtree(work.old, ignore_errors=True)  # a turn before's
            try:
                os.rename(final, work.old)
            except FileNotFoundError:
                continue  # moved aside by another generate meanwhile
        try:
            os.rename(work.path, final)
            break
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    else:
        raise UsageError(f"delta {name}: other generates of it kept publishing; try again")
    shutil.rmtree(work.old, ignore_errors=True)
    if fsync:
        fsync_dir(root)
    return final


def remove_delta(repo: Repository, from_id: ObjectId | None, to_id: ObjectId) -> bool:
    """Delete a delta; False if there was none."""
    import shutil  # here: see the imports

    name = delta_name(from_id, to_id)
    path = repo.path / DELTAS_DIR / name
    # a killed generate's .old- of it would be put back by the next clean-up (review21 19)
    removed = remove_dead_old(repo.path / DELTAS_DIR, name)
    if not path.is_dir():
        return removed
    shutil.rmtree(path)
    return True
