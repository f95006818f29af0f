"""The ``.filez`` encoding of a file object: what archive repositories store and serve.

Layout (docs/format.md, docs/http-layout.md)::

    magic "SWZ2"  u64 content size  u32 header length  header (canonical FileHeader)
    then ceil(size / 1 MiB) chunks: u32 frame length, one zstd frame holding exactly
    the next min(1 MiB, what is left) bytes of content (its content size recorded)
    and nothing after the last chunk.

Chunks of bounded size let a reader decompress with bounded memory and know, before
decompressing, how much each frame must give: a payload that lies about its size, a
frame that inflates beyond its share (a zstd bomb), trailing or missing bytes are all
refused without reading more than the prefix claims. Older repositories hold
``"SWZ1"`` objects (the same prefix, then one zlib stream of the content); they stay
readable, and new objects are always written as SWZ2.

:func:`decode_filez` is the one way to take a ``.filez`` payload from outside (an HTTP
body, a delta part): decoded, bounded and verified against the object's id.
"""

from __future__ import annotations

import io
import struct
import sys
import threading
import types
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from store.errors import CorruptObjectError, FormatError
from store.ids import ObjectId, ObjectType, digest
from store.objects import Commit, DirMeta, DirTree, FileHeader
from store.record import Frozen
from store.verify import ContentCheck

if TYPE_CHECKING:  # imported where used: a commit of a directory never needs zstd (~5 ms)
    import zstandard

MAGIC_ZLIB = b"SWZ1"  # read only: objects of repositories made before zstd
MAGIC_ZSTD = b"SWZ2"
PREFIX = struct.Struct(">4sQI")  # magic, content size, header length
CHUNK = 1 << 20  # content bytes per zstd frame
MAX_FRAME = CHUNK + (CHUNK >> 7) + 1024  # above zstd's compress bound of one chunk
MAX_HEADER = 16 << 20  # a header is ownership, mode, a target and xattrs
ZSTD_LEVEL = 3
_FRAME_LEN = struct.Struct(">I")
_READ = 1 << 20
_local = threading.local()  # zstd contexts, one of each per thread
_zstandard_module: types.ModuleType | None = None  # see _zstandard()
_zstandard_lock = threading.Lock()


def _zstandard() -> types.ModuleType:
    """The zstandard module, imported once (under a lock: a module another thread is
    still importing is in sys.modules half made, review18 R18-2) and the first time
    without the platform module its ``__init__`` imports only to ask
    ``platform.python_implementation()`` (platform compiles regexes at import: ~8 M
    instructions, ~3 ms, of every pull): see _PlatformStandIn."""
    global _zstandard_module
    if _zstandard_module is None:
        with _zstandard_lock:
            if _zstandard_module is None:
                _zstandard_module = _import_zstandard()
    return _zstandard_module


def _import_zstandard() -> types.ModuleType:
    if "platform" not in sys.modules:
        stand_in = sys.modules["platform"] = _PlatformStandIn()
        try:
            import zstandard
        finally:
            if sys.modules.get("platform") is stand_in:
                del sys.modules["platform"]
    import zstandard

    return zstandard


class _PlatformStandIn(types.ModuleType):
    """In sys.modules as ``platform`` while zstandard is imported: it answers
    python_implementation(), and anything else asked of it (by zstandard, or by a
    thread that imported platform meanwhile) from the real module, imported then."""

    def __init__(self) -> None:
        super().__init__("platform")

    @staticmethod
    def python_implementation() -> str:
        names = {"cpython": "CPython", "pypy": "PyPy"}
        known = names.get(sys.implementation.name)
        return known if known is not None else str(_real_platform().python_implementation())

    def __getattr__(self, name: str) -> Any:
        return getattr(_real_platform(), name)


def _real_platform() -> types.ModuleType:
    if isinstance(sys.modules.get("platform"), _PlatformStandIn):
        del sys.modules["platform"]
    import platform

    return platform


def prefix(size: int, header_bytes: bytes) -> bytes:
    """The SWZ2 prefix of an object of ``size`` content bytes and this header."""
    return PREFIX.pack(MAGIC_ZSTD, size, len(header_bytes)) + header_bytes


def frames(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The chunks of a SWZ2 body for this content: 1 MiB pieces, each compressed."""
    compressor: zstandard.ZstdCompressor | None = getattr(_local, "cctx", None)
    if compressor is None:  # one per thread: making one costs more than a small object
        compressor = _local.cctx = _zstandard().ZstdCompressor(level=ZSTD_LEVEL)
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        while len(pending) >= CHUNK:
            yield _frame(compressor, bytes(pending[:CHUNK]))
            del pending[:CHUNK]
    if pending:
        yield _frame(compressor, bytes(pending))


def _frame(compressor: zstandard.ZstdCompressor, data: bytes) -> bytes:
    compressed = compressor.compress(data)
    return _FRAME_LEN.pack(len(compressed)) + compressed


def encode_filez(header: FileHeader, content: bytes) -> bytes:
    """The whole ``.filez`` payload of a small object held in memory."""
    return prefix(len(content), header.encode()) + b"".join(frames([content]))


def _corrupt(object_id: bytes | None, what: str) -> CorruptObjectError:
    shown = object_id.hex() if object_id is not None else "(unknown)"
    return CorruptObjectError(f"object {shown}: {what}", object_id=object_id)


def _read_exact(stream: BinaryIO, size: int, object_id: bytes | None, what: str) -> bytes:
    data = stream.read(size) if size else b""
    if len(data) != size:
        raise _corrupt(object_id, f"truncated {what}")
    return data


def read_prefix(stream: BinaryIO, object_id: bytes | None) -> tuple[bytes, int, FileHeader]:
    """Magic, content size and header at the start of a ``.filez`` stream; the stream
    is left at the start of the compressed content."""
    magic, size, header, _ = _read_prefix(stream, object_id)
    return magic, size, header


def _read_prefix(stream: BinaryIO, object_id: bytes | None) -> tuple[bytes, int, FileHeader, bytes]:
    head = _read_exact(stream, PREFIX.size, object_id, "archive object")
    magic, size, header_len = PREFIX.unpack(head)
    if magic not in (MAGIC_ZSTD, MAGIC_ZLIB):
        raise _corrupt(object_id, "not an archive object (bad magic)")
    if header_len > MAX_HEADER:
        raise _corrupt(object_id, f"a header of {header_len} B")
    raw = _read_exact(stream, header_len, object_id, "archive header")
    try:
        header = FileHeader.decode(raw)  # canonical: ``raw`` is what the id hashes
    except FormatError as exc:
        raise _corrupt(object_id, str(exc)) from exc
    return magic, int(size), header, raw


def content_reader(
    stream: BinaryIO, magic: bytes, size: int, object_id: bytes | None
) -> io.RawIOBase:
    """The content after a prefix, decompressed as it is read (not hashed here)."""
    if magic == MAGIC_ZLIB:
        return _Inflater(stream, object_id, size)
    return _ZstdChunks(stream, object_id, size)


def decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompression context (making one costs more than a small object)."""
    dctx: zstandard.ZstdDecompressor | None = getattr(_local, "dctx", None)
    if dctx is None:
        dctx = _local.dctx = _zstandard().ZstdDecompressor()
    return dctx


def chunk_length(raw: bytes, object_id: bytes | None) -> int:
    """A chunk's compressed length from its 4-byte prefix, refused above MAX_FRAME."""
    (length,) = _FRAME_LEN.unpack(raw)
    if length > MAX_FRAME:
        raise _corrupt(object_id, f"a compressed chunk of {length} B")
    return int(length)


def inflate_chunk(
    dctx: zstandard.ZstdDecompressor, frame: bytes, want: int, object_id: bytes | None
) -> bytes:
    """One chunk's content: its frame must record ``want`` bytes (checked before it
    inflates: a zstd bomb costs nothing) and hold exactly them, and nothing after."""
    zstandard = _zstandard()  # loaded by decompressor(), which made ``dctx``
    try:
        declared = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as exc:
        raise _corrupt(object_id, f"a bad zstd frame: {exc}") from None
    if declared != want:
        raise _wrong_size(declared, want, object_id)
    decompressor = dctx.decompressobj()
    try:
        data = decompressor.decompress(frame)
    except zstandard.ZstdError as exc:
        raise _corrupt(object_id, f"a bad zstd frame: {exc}") from None
    if len(data) != want or not decompressor.eof or decompressor.unused_data:
        raise _wrong_size(len(data), want, object_id)
    return data


def _wrong_size(found: int, want: int, object_id: bytes | None) -> CorruptObjectError:
    if found > want or found < 0:  # < 0: no size recorded in the frame
        return _corrupt(object_id, "a chunk inflates beyond its recorded size")
    return _corrupt(object_id, "a chunk holds less than its recorded size")


class _ZstdChunks(io.RawIOBase):
    """SWZ2 content: one frame at a time, each checked against its share of the size."""

    def __init__(self, source: BinaryIO, object_id: bytes | None, size: int) -> None:
        super().__init__()
        self._source = source
        self._object_id = object_id
        self._left = size
        self._buffer = b""
        self._ended = False
        self._dctx = decompressor()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self._buffer:
            if self._left == 0:
                self._check_end()
                return 0
            self._buffer = self._next_frame()
        count = min(len(buffer), len(self._buffer))
        buffer[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]
        return count

    def _next_frame(self) -> bytes:
        want = min(CHUNK, self._left)
        length = chunk_length(
            _read_exact(self._source, 4, self._object_id, "chunk"), self._object_id
        )
        frame = _read_exact(self._source, length, self._object_id, "compressed chunk")
        data = inflate_chunk(self._dctx, frame, want, self._object_id)
        self._left -= want
        return data

    def _check_end(self) -> None:
        if not self._ended:
            self._ended = True
            if self._source.read(1):
                raise _corrupt(self._object_id, "trailing bytes after the compressed data")

    def close(self) -> None:
        if not self.closed:
            self._source.close()
        super().close()


class _Inflater(io.RawIOBase):
    """SWZ1 content (zlib), decompressed as it is read.

    Never holds more than one compressed chunk and one read's worth of output, and
    refuses a stream that inflates beyond the recorded size (a zip bomb), ends early,
    or carries bytes after the compressed data.
    """

    def __init__(self, source: BinaryIO, object_id: bytes | None, size: int) -> None:
        super().__init__()
        self._source = source
        self._object_id = object_id
        self._left = size
        self._inflater = zlib.decompressobj()
        self._pending = b""  # compressed input not yet consumed

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while True:
            if self._inflater.eof:
                self._check_end()
                return 0
            source_ended = False
            if not self._pending:
                self._pending = self._source.read(_READ)
                source_ended = not self._pending  # zlib may still hold output: ask once more
            want = min(len(buffer), self._left + 1)
            try:
                data = self._inflater.decompress(self._pending, want)
            except zlib.error as exc:
                raise _corrupt(self._object_id, str(exc)) from None
            self._pending = self._inflater.unconsumed_tail
            if source_ended and not data and not self._inflater.eof:
                raise _corrupt(self._object_id, "truncated compressed data")
            if len(data) > self._left:
                raise _corrupt(self._object_id, "inflates beyond its recorded size")
            if data:
                self._left -= len(data)
                buffer[: len(data)] = data
                return len(data)

    def _check_end(self) -> None:
        if self._left:
            raise _corrupt(self._object_id, "truncated compressed data")
        if self._inflater.unused_data or self._source.read(1):
            raise _corrupt(self._object_id, "trailing bytes after the compressed data")

    def close(self) -> None:
        if not self.closed:
            self._source.close()
        super().close()


_VERIFIED = object()  # only decode_filez holds it: see VerifiedFile


class VerifiedFile:
    """A file object held in memory whose id :func:`decode_filez` has just computed
    from these very bytes: a transaction stores it without hashing it again
    (``Transaction.write_verified_file``). Nothing else can make one."""

    __slots__ = ("content", "header", "header_bytes", "object_id")

    def __init__(
        self,
        token: object,
        object_id: ObjectId,
        header: FileHeader,
        header_bytes: bytes,
        content: bytes,
    ) -> None:
        if token is not _VERIFIED:
            raise TypeError("only decode_filez makes a VerifiedFile (from the bytes it hashed)")
        self.object_id = object_id
        self.header = header
        self.header_bytes = header_bytes
        self.content = content


class DecodedFile(Frozen):
    """A verified file object decoded from its ``.filez`` payload.

    ``content`` holds the content when no ``out`` stream was given to
    :func:`decode_filez` (empty for a symlink); None when it was written to ``out``.
    ``verified`` is set when the content is held in memory (``content``, or up to
    ``keep`` bytes).
    """

    __slots__ = ("content", "header", "size", "verified")

    header: FileHeader
    size: int
    content: bytes | None
    verified: VerifiedFile | None  # neither compared nor shown

    def __init__(
        self,
        header: FileHeader,
        size: int,
        content: bytes | None,
        verified: VerifiedFile | None = None,
    ) -> None:
        object.__setattr__(self, "header", header)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "content", content)
        object.__setattr__(self, "verified", verified)

    def _values(self) -> tuple[object, ...]:
        return (self.header, self.size, self.content)

    def __repr__(self) -> str:
        return f"DecodedFile(header={self.header!r}, size={self.size!r}, content={self.content!r})"


def decode_filez(
    source: bytes | BinaryIO,
    object_id: ObjectId,
    out: BinaryIO | None = None,
    max_size: int | None = None,
    keep: int = 0,
) -> DecodedFile:
    """Decode a ``.filez`` payload and verify it is object ``object_id``.

    ``source`` is the payload's bytes or a stream positioned at its start (an HTTP
    body); it is read only as far as the prefix's claims allow, plus one byte that
    shows a payload longer than it says. The content goes to ``out`` if given (memory
    stays bounded by a chunk), else is returned. ``max_size``: refuse a claimed content
    size above it before reading any content. ``keep``: content of at most this many
    bytes (0: none) is held in memory (``content``, and ``verified``) even when ``out``
    is given (then not written to). Raises CorruptObjectError (FormatError for a
    payload that is not a ``.filez`` encoding at all) on anything that is not
    exactly the object; nothing is returned unverified (what was written to ``out`` by
    then is to be thrown away by the caller).
    """
    stream: BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        magic, size, header, header_bytes = _read_prefix(stream, object_id)
    except CorruptObjectError as exc:
        raise FormatError(str(exc), object_id=object_id) from None
    if max_size is not None and size > max_size:
        raise _corrupt(object_id, f"claims {size} B of content, more than the {max_size} allowed")
    if header.is_symlink and size:  # refused before any content is read
        raise _corrupt(object_id, "a symlink with content")
    check = ContentCheck(object_id, header_bytes, size)
    kept: list[bytes] = []
    if keep and size <= keep:
        out = None
    for chunk in _content_chunks(stream, magic, size, object_id):
        check.update(chunk)
        if out is not None:
            out.write(chunk)
        else:
            kept.append(chunk)
    check.require()
    if out is not None:
        return DecodedFile(header, size, None)
    content = b"".join(kept)
    verified = VerifiedFile(_VERIFIED, object_id, header, header_bytes, content)
    return DecodedFile(header, size, content, verified)


def _content_chunks(
    stream: BinaryIO, magic: bytes, size: int, object_id: bytes | None
) -> Iterator[bytes]:
    """The content after a prefix, as it inflates: SWZ2's chunks straight from their
    frames (no stream layers: a pull decodes thousands of small objects, and each layer
    copied every chunk; docs/decisions.md, "Pull's storage path"), SWZ1 through
    :class:`_Inflater`. Ends by checking that nothing follows the content."""
    if magic == MAGIC_ZLIB:
        reader = _Inflater(cast(BinaryIO, _Unclosed(stream)), object_id, size)
        while chunk := reader.read(_READ):
            yield chunk
        return
    dctx = decompressor()
    left = size
    while left:
        want = min(CHUNK, left)
        length = chunk_length(_read_exact(stream, 4, object_id, "chunk"), object_id)
        frame = _read_exact(stream, length, object_id, "compressed chunk")
        yield inflate_chunk(dctx, frame, want, object_id)
        left -= want
    if stream.read(1):
        raise _corrupt(object_id, "trailing bytes after the compressed data")


class _Unclosed(io.RawIOBase):
    """A caller's stream lent to a reader that closes its source when done."""

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__()
        self._stream = stream

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


_METADATA_DECODERS: dict[ObjectType, Callable[[bytes], Commit | DirTree | DirMeta]] = {
    ObjectType.COMMIT: Commit.decode,
    ObjectType.DIRTREE: DirTree.decode,
    ObjectType.DIRMETA: DirMeta.decode,
}
MAX_METADATA_BYTES = 256 << 20  # a dirtree of a million long names is far below this


def decode_metadata(
    kind: ObjectType, object_id: ObjectId, payload: bytes
) -> Commit | DirTree | DirMeta:
    """A metadata object's file (``.commit``, ``.dirtree``, ``.dirmeta``: its exact
    canonical encoding), verified: it must hash to ``object_id`` and decode as ``kind``
    (CorruptObjectError otherwise; FormatError for bytes that are not an encoding)."""
    if kind is ObjectType.FILE:
        raise TypeError("a file object's payload is .filez: use decode_filez")
    if len(payload) > MAX_METADATA_BYTES:
        raise _corrupt(object_id, f"a {kind.suffix} of {len(payload)} B")
    if digest(payload) != object_id:
        raise _corrupt(object_id, f"its bytes do not hash to its id ({kind.suffix})")
    try:
        return _METADATA_DECODERS[kind](payload)
    except FormatError as exc:
        raise FormatError(f"object {object_id.hex()}: {exc}", object_id=object_id) from None
