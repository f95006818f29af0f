"""The object model: file headers, dirtrees, dirmetas and commits.

Objects are plain frozen values with a canonical ``encode()`` and a strict
``decode()``; decode refuses anything whose re-encoding differs, so a stored
object is canonical by construction. See docs/format.md for the byte layout and
the test vectors in tests/store/test_vectors.py.
"""

from __future__ import annotations

import stat
import struct
from typing import NamedTuple, TypeVar

import blake3

from store.encoding import Reader, Writer
from store.errors import FormatError, InvalidNameError
from store.ids import ID_BYTES, ObjectId, digest
from store.names import check_names
from store.record import Frozen

FORMAT_VERSION = 1
U32_MAX = 2**32 - 1
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
MODE_BITS = 0o177777  # S_IFMT and the permission bits: all that st_mode holds on Linux
_OWNER_MODE = struct.Struct(">IIII")
_COUNT = struct.Struct(">I")
_PLAIN_HEADER = 2 + _OWNER_MODE.size + _COUNT.size  # tag, owner/mode/target length, no xattrs
MAX_SYMLINK_TARGET = 4095

Xattrs = tuple[tuple[bytes, bytes], ...]


def _check_xattrs(xattrs: Xattrs, what: str) -> None:
    names = [name for name, _ in xattrs]
    if names != sorted(set(names)):
        raise FormatError(f"{what}: xattrs not sorted or not unique")
    if any(not name or b"\0" in name for name in names):
        raise FormatError(f"{what}: invalid xattr name")


def _check_owner_mode(uid: int, gid: int, mode: int, what: str) -> None:
    """Values the encoding can hold: u32 ids, and a mode of type and permission bits only.

    Checked when a value is made, so that a bad uid from a command line (or a tar
    member) is a clear FormatError rather than a struct error deep in encode(). One
    comparison chain on the usual path: every file of a commit comes through here.
    """
    if 0 <= uid <= U32_MAX and 0 <= gid <= U32_MAX and 0 <= mode <= MODE_BITS:
        return
    for name, value in (("uid", uid), ("gid", gid)):
        if not 0 <= value <= U32_MAX:
            raise FormatError(f"{what}: {name} {value} is out of range (0 to {U32_MAX})")
    raise FormatError(f"{what}: mode {mode:#o} has bits beyond the file type and permissions")


def _check_id(value: bytes, what: str) -> None:
    if len(value) != ID_BYTES:
        raise FormatError(f"{what} id of {len(value)} bytes, not {ID_BYTES}")


def _check_text(value: str, what: str) -> None:
    """Commit text is UTF-8: undecodable bytes (lone surrogates in a str) are refused."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(f"{what} is not valid UTF-8 text") from None


def _tag(writer: Writer, letter: bytes) -> None:
    writer.raw(letter)
    writer.u8(FORMAT_VERSION)


def _expect_tag(reader: Reader, letter: bytes, what: str) -> None:
    if reader.raw(1) != letter or reader.u8() != FORMAT_VERSION:
        raise FormatError(f"not a version {FORMAT_VERSION} {what}")


class FileHeader(Frozen):
    """What a file object's id covers besides the content: ownership, mode, xattrs."""

    __slots__ = ("gid", "mode", "symlink_target", "uid", "xattrs")

    uid: int
    gid: int
    mode: int
    symlink_target: bytes
    xattrs: Xattrs

    def __init__(
        self, uid: int, gid: int, mode: int, symlink_target: bytes = b"", xattrs: Xattrs = ()
    ) -> None:
        set_field = object.__setattr__
        set_field(self, "uid", uid)
        set_field(self, "gid", gid)
        set_field(self, "mode", mode)
        set_field(self, "symlink_target", symlink_target)
        set_field(self, "xattrs", xattrs)
        _check_owner_mode(self.uid, self.gid, self.mode, "file header")
        kind = stat.S_IFMT(self.mode)
        if kind == stat.S_IFLNK:
            if not self.symlink_target or b"\0" in self.symlink_target:
                raise FormatError("symlink with an empty or NUL target")
            if len(self.symlink_target) > MAX_SYMLINK_TARGET:
                raise FormatError("symlink target too long")
        elif kind == stat.S_IFREG:
            if self.symlink_target:
                raise FormatError("regular file with a symlink target")
        else:
            raise FormatError(f"file object of unsupported type {oct(kind)}")
        _check_xattrs(self.xattrs, "file header")

    @property
    def is_symlink(self) -> bool:
        """Whether the file is a symlink (its target in ``symlink_target``, no content)."""
        return stat.S_ISLNK(self.mode)

    def encode(self) -> bytes:
        """The canonical bytes of the header (what the file id hashes first)."""
        # The hot path of every commit: packed by hand, same bytes as Writer would give.
        target = self.symlink_target
        parts = [b"F\x01", _OWNER_MODE.pack(self.uid, self.gid, self.mode, len(target)), target]
        parts.append(_COUNT.pack(len(self.xattrs)))
        for name, value in self.xattrs:
            parts += (_COUNT.pack(len(name)), name, _COUNT.pack(len(value)), value)
        return b"".join(parts)

    @classmethod
    def read_from(cls, r: Reader) -> FileHeader:
        """Decode a header from ``r`` (FormatError unless canonical)."""
        _expect_tag(r, b"F", "file header")
        uid, gid, mode = r.u32(), r.u32(), r.u32()
        return cls(uid, gid, mode, r.blob(), r.pairs())

    @classmethod
    def decode(cls, data: bytes) -> FileHeader:
        """The header ``data`` encodes canonically, or FormatError."""
        if data[:2] == b"F\x01" and len(data) >= _PLAIN_HEADER:
            # Fast path for the usual header without xattrs: canonical by its exact length.
            uid, gid, mode, target_len = _OWNER_MODE.unpack_from(data, 2)
            if len(data) == _PLAIN_HEADER + target_len and data[-4:] == b"\0\0\0\0":
                return cls(uid, gid, mode, data[18 : 18 + target_len], ())
        r = Reader(data, "file header")
        header = cls.read_from(r)
        r.finish()
        return _canonical(header, data)

    def hasher(self) -> blake3.blake3:
        """A blake3 state fed with the header; feed the content, then take the id."""
        return blake3.blake3(self.encode())

    def object_id(self, content: bytes = b"") -> ObjectId:
        """The id of the file object with this header and ``content``."""
        h = self.hasher()
        h.update(content)
        return ObjectId(h.digest())


# The named tuples of store/ are made by call, not by class: a class's annotations are
# strings in these modules (from __future__ import annotations), which typing compiles,
# and a process's first compile() costs ~1.8 ms (CPython builds its ast types then):
# paid by every command that imported one, a pull included.
FileStat = NamedTuple(  # noqa: UP014 (see above)
    "FileStat", [("uid", int), ("gid", int), ("mode", int), ("size", int), ("header", bytes)]
)
FileStat.__doc__ = """What stat shows of a file object (size: content bytes, or a symlink's
target), and its encoded header, which re-hashing the object starts from."""


def file_stat(record: bytes, content_size: int, offset: int = 0) -> FileStat:
    """Ownership, mode and size from a file header encoded at ``offset`` of ``record``.

    For the mount's listings and reads, without decoding the rest: the fields stat
    shows are checked as decode would (version tag, a regular file or a symlink whose
    target lies inside the header); xattrs are left to FileHeader.decode when asked
    for. A header that does not decode fails the object's hash when it is read.
    """
    if record[offset : offset + 2] != b"F\x01" or len(record) - offset < _PLAIN_HEADER:
        raise FormatError("not a version 1 file header")
    uid, gid, mode, target_len = _OWNER_MODE.unpack_from(record, offset + 2)
    if mode > MODE_BITS:
        raise FormatError(f"file header mode {mode:#o} has bits beyond type and permissions")
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFREG and target_len == 0:
        return FileStat(uid, gid, mode, content_size, record[offset:])
    room = len(record) - offset - _PLAIN_HEADER
    if kind == stat.S_IFLNK and 0 < target_len <= min(MAX_SYMLINK_TARGET, room):
        return FileStat(uid, gid, mode, target_len, record[offset:])
    raise FormatError(f"file header of type {oct(kind)} with a {target_len}-byte target")


_PLAIN_FILE = struct.Struct(">2sIIII")  # a header's tag, owner, mode and target length


def regular_file_owner_mode(record: bytes, offset: int = 0) -> tuple[int, int, int] | None:
    """(uid, gid, mode) of the file header at ``offset`` of ``record`` if it is a regular
    file's, None if it is a symlink's; checked as :func:`file_stat` checks it (the same
    FormatError for one that does not decode). One unpack in the usual case: the
    link-checkout lookup (store/inodes.py) reads one header per farm file."""
    if len(record) - offset >= _PLAIN_HEADER:
        tag, uid, gid, mode, target_len = _PLAIN_FILE.unpack_from(record, offset)
        if tag == b"F\x01" and not target_len and mode <= MODE_BITS and stat.S_ISREG(mode):
            return uid, gid, mode
    file_stat(record, 0, offset)  # a symlink's header, or the error file_stat gives
    return None


class DirMeta(Frozen):
    """Ownership, mode and xattrs of a directory."""

    __slots__ = ("gid", "mode", "uid", "xattrs")

    uid: int
    gid: int
    mode: int
    xattrs: Xattrs

    def __init__(self, uid: int, gid: int, mode: int, xattrs: Xattrs = ()) -> None:
        set_field = object.__setattr__
        set_field(self, "uid", uid)
        set_field(self, "gid", gid)
        set_field(self, "mode", mode)
        set_field(self, "xattrs", xattrs)
        _check_owner_mode(self.uid, self.gid, self.mode, "dirmeta")
        if not stat.S_ISDIR(self.mode):
            raise FormatError("dirmeta mode is not a directory")
        _check_xattrs(self.xattrs, "dirmeta")

    def encode(self) -> bytes:
        """The canonical bytes of the object (what its id hashes)."""
        w = Writer()
        _tag(w, b"M")
        w.u32(self.uid)
        w.u32(self.gid)
        w.u32(self.mode)
        w.pairs(self.xattrs)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> DirMeta:
        """The dirmeta ``data`` encodes canonically, or FormatError."""
        r = Reader(data, "dirmeta")
        _expect_tag(r, b"M", "dirmeta")
        meta = cls(r.u32(), r.u32(), r.u32(), r.pairs())
        r.finish()
        return _canonical(meta, data)

    def object_id(self) -> ObjectId:
        """The id of this object: blake3 of its canonical bytes."""
        return digest(self.encode())


class DirEntry(Frozen):
    """A subdirectory entry of a dirtree."""

    __slots__ = ("meta", "tree")

    tree: ObjectId
    meta: ObjectId

    def __init__(self, tree: ObjectId, meta: ObjectId) -> None:
        object.__setattr__(self, "tree", tree)
        object.__setattr__(self, "meta", meta)


class DirTree(Frozen):
    """The sorted entries of one directory: files by id, subdirectories by tree and meta."""

    __slots__ = ("dirs", "files")

    files: tuple[tuple[bytes, ObjectId], ...]
    dirs: tuple[tuple[bytes, DirEntry], ...]

    def __init__(
        self,
        files: tuple[tuple[bytes, ObjectId], ...] = (),
        dirs: tuple[tuple[bytes, DirEntry], ...] = (),
    ) -> None:
        object.__setattr__(self, "files", files)
        object.__setattr__(self, "dirs", dirs)
        file_names = [n for n, _ in files]
        dir_names = [n for n, _ in dirs]
        for names in (file_names, dir_names):
            if names != sorted(set(names)):
                raise FormatError("dirtree entries not sorted or not unique")
        if set(file_names) & set(dir_names):
            raise FormatError("dirtree names a file and a directory alike")
        check_names(file_names + dir_names, "a directory tree")

    @classmethod
    def build(cls, files: dict[bytes, ObjectId], dirs: dict[bytes, DirEntry]) -> DirTree:
        """A dirtree of these entries, sorted by name as the encoding requires. Unique
        by construction (a dict's keys) and sorted here, so of the constructor's checks
        only the names and that none is both a file and a directory remain (a commit
        builds one a directory: the rest was 2-3% of a farm re-commit)."""
        if not files.keys().isdisjoint(dirs):
            raise FormatError("dirtree names a file and a directory alike")
        check_names([*files, *dirs], "a directory tree")
        tree = object.__new__(cls)
        object.__setattr__(tree, "files", tuple(sorted(files.items())))
        object.__setattr__(tree, "dirs", tuple(sorted(dirs.items())))
        return tree

    def encode(self) -> bytes:
        """The canonical bytes of the object (what its id hashes): Writer's encoding,
        written out (a commit writes one a directory; names are checked no longer
        than 255 bytes, so their u32 lengths always fit)."""
        parts = [b"T", bytes((FORMAT_VERSION,)), _COUNT.pack(len(self.files))]
        for name, file_id in self.files:
            if len(file_id) != ID_BYTES:
                raise FormatError(f"id of {len(file_id)} bytes")
            parts += (_COUNT.pack(len(name)), name, file_id)
        parts.append(_COUNT.pack(len(self.dirs)))
        for name, entry in self.dirs:
            if len(entry.tree) != ID_BYTES or len(entry.meta) != ID_BYTES:
                raise FormatError(f"id of {len(entry.tree)} or {len(entry.meta)} bytes")
            parts += (_COUNT.pack(len(name)), name, entry.tree, entry.meta)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> DirTree:
        """Strict decoding, written out by hand: dirtrees are read on every lookup.

        Canonical by construction: fixed-width integers, every byte consumed, and
        __post_init__ refuses unsorted or repeated names.
        """
        if data[:2] != b"T\x01":
            raise FormatError(f"not a version {FORMAT_VERSION} dirtree")
        files, pos = _entries(data, 2, 1)
        dirs_raw, pos = _entries(data, pos, 2)
        if pos != len(data):
            raise FormatError("trailing bytes after dirtree")
        dirs = tuple(
            (name, DirEntry(ObjectId(ids[:32]), ObjectId(ids[32:]))) for name, ids in dirs_raw
        )
        try:
            return cls(tuple((name, ObjectId(ids)) for name, ids in files), dirs)
        except InvalidNameError as exc:
            raise FormatError(f"dirtree holds an invalid name: {exc}") from exc

    def object_id(self) -> ObjectId:
        """The id of this object: blake3 of its canonical bytes."""
        return digest(self.encode())


class Commit(Frozen):
    """A root tree and meta, its parent, message, time (seconds, UTC) and metadata."""

    __slots__ = ("body", "meta", "metadata", "parent", "subject", "timestamp", "tree")

    tree: ObjectId
    meta: ObjectId
    parent: ObjectId | None
    timestamp: int
    subject: str
    body: str
    metadata: tuple[tuple[str, str], ...]

    def __init__(
        self,
        tree: ObjectId,
        meta: ObjectId,
        parent: ObjectId | None,
        timestamp: int,
        subject: str = "",
        body: str = "",
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        set_field = object.__setattr__
        set_field(self, "tree", tree)
        set_field(self, "meta", meta)
        set_field(self, "parent", parent)
        set_field(self, "timestamp", timestamp)
        set_field(self, "subject", subject)
        set_field(self, "body", body)
        set_field(self, "metadata", metadata)
        _check_id(self.tree, "commit tree")
        _check_id(self.meta, "commit meta")
        if self.parent is not None:
            _check_id(self.parent, "commit parent")
        if not I64_MIN <= self.timestamp <= I64_MAX:
            raise FormatError(f"commit timestamp {self.timestamp} is out of range (64 bits)")
        _check_text(self.subject, "commit subject")
        _check_text(self.body, "commit body")
        keys = [k for k, _ in self.metadata]
        if keys != sorted(set(keys)):
            raise FormatError("commit metadata keys not sorted or not unique")
        for key, value in self.metadata:
            _check_text(key, "commit metadata key")
            _check_text(value, f"commit metadata value of {key!r}")

    @property
    def version(self) -> str | None:
        """The ``version`` metadata string, if the commit has one."""
        return dict(self.metadata).get("version")

    def encode(self) -> bytes:
        """The canonical bytes of the object (what its id hashes)."""
        w = Writer()
        _tag(w, b"C")
        w.object_id(self.tree)
        w.object_id(self.meta)
        w.u8(0 if self.parent is None else 1)
        if self.parent is not None:
            w.object_id(self.parent)
        w.i64(self.timestamp)
        w.blob(self.subject.encode())
        w.blob(self.body.encode())
        w.pairs(tuple((k.encode(), v.encode()) for k, v in self.metadata))
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> Commit:
        """The commit ``data`` encodes canonically, or FormatError."""
        r = Reader(data, "commit")
        _expect_tag(r, b"C", "commit")
        tree, meta = r.object_id(), r.object_id()
        has_parent = r.u8()
        if has_parent not in (0, 1):
            raise FormatError("commit parent flag is not 0 or 1")
        parent = r.object_id() if has_parent else None
        timestamp = r.i64()
        try:
            subject, body = r.blob().decode(), r.blob().decode()
            metadata = tuple((k.decode(), v.decode()) for k, v in r.pairs())
        except UnicodeDecodeError as exc:
            raise FormatError("commit text is not UTF-8") from exc
        r.finish()
        return _canonical(cls(tree, meta, parent, timestamp, subject, body, metadata), data)

    def object_id(self) -> ObjectId:
        """The id of this object: blake3 of its canonical bytes."""
        return digest(self.encode())


def _entries(data: bytes, pos: int, ids: int) -> tuple[list[tuple[bytes, bytes]], int]:
    """A u32-counted list of (blob name, ``ids`` ids of 32 bytes) starting at ``pos``."""
    size = len(data)
    try:
        (count,) = _COUNT.unpack_from(data, pos)
        pos += 4
        if count * (4 + 32 * ids) > size - pos:
            raise FormatError("dirtree list longer than the object")
        entries = []
        for _ in range(count):
            (length,) = _COUNT.unpack_from(data, pos)
            start = pos + 4
            pos = start + length + 32 * ids
            if pos > size:
                raise FormatError("truncated dirtree")
            entries.append((data[start : start + length], data[start + length : pos]))
    except struct.error:
        raise FormatError("truncated dirtree") from None
    return entries, pos


def dirtree_outline(data: bytes) -> tuple[int, list[ObjectId]]:
    """The number of files of an encoded dirtree and the ids of its subtrees, without
    decoding it (nothing is checked but the bounds): what a count of a commit's files
    needs, at a tenth of the cost of :meth:`DirTree.decode`."""
    try:
        (count,) = _COUNT.unpack_from(data, 2)
        pos = 6
        for _ in range(count):
            pos += 4 + 32 + _COUNT.unpack_from(data, pos)[0]
        (dirs,) = _COUNT.unpack_from(data, pos)
        pos += 4
        subtrees = []
        for _ in range(dirs):
            pos += 4 + _COUNT.unpack_from(data, pos)[0]
            subtrees.append(ObjectId(data[pos : pos + 32]))
            pos += 64
        if pos > len(data):
            raise struct.error
    except struct.error:
        raise FormatError("truncated dirtree") from None
    return count, subtrees


MetaObject = DirTree | DirMeta | Commit


_T = TypeVar("_T", FileHeader, DirMeta, DirTree, Commit)


def _canonical(value: _T, data: bytes) -> _T:
    if value.encode() != data:
        raise FormatError(f"non-canonical {type(value).__name__} encoding")
    return value
