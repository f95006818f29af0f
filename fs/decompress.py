"""Reading a compressed archive to its very end, every check verified.

Python's tarfile stops reading at the end-of-archive blocks and its gzip reader never
checks the trailer, so a damaged archive used to be committed with wrong bytes. Here
every gzip member's CRC-32 and ISIZE, every bzip2 block and stream CRC and every xz
check and index are verified, concatenated streams are read in turn, and after the
last stream only NUL padding may follow. An xz stream made without a check cannot be
verified and is refused, as are legacy ``.lzma`` and zstd.
"""

from __future__ import annotations

import bz2
import io
import lzma
import tarfile
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

CHUNK = 1 << 20  # bytes decompressed or read at a time
_XZ_MEMLIMIT = 256 << 20  # xz -9 needs 65 MiB; a larger dictionary is a memory bomb


class ArchiveError(Exception):
    """The archive as a whole is damaged or unusable; load() names the archive."""


# ----- compressed streams ------------------------------------------------------------


class _Codec(Protocol):
    """One compressed stream being decoded, with bz2's and lzma's decompressor interface."""

    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    @property
    def needs_input(self) -> bool: ...
    def decompress(self, data: bytes, max_length: int) -> bytes: ...


class _GzipMember:
    """zlib's gzip decoder (which checks the member's CRC-32 and ISIZE) as a _Codec."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(wbits=31)
        self._full = False  # the last call hit max_length: output may be pending

    @property
    def eof(self) -> bool:
        return self._z.eof

    @property
    def unused_data(self) -> bytes:
        return self._z.unused_data

    @property
    def needs_input(self) -> bool:
        return not self._z.unconsumed_tail and not self._full

    def decompress(self, data: bytes, max_length: int) -> bytes:
        out = self._z.decompress(self._z.unconsumed_tail + data, max_length)
        self._full = len(out) == max_length
        return out


class _XzStream:
    """An xz stream (liblzma checks its blocks, index and footer) that must carry a check."""

    def __init__(self) -> None:
        self._d = lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=_XZ_MEMLIMIT)

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    @property
    def needs_input(self) -> bool:
        return self._d.needs_input

    def decompress(self, data: bytes, max_length: int) -> bytes:
        out = self._d.decompress(data, max_length)
        if self._d.check == lzma.CHECK_NONE:
            raise ArchiveError(
                "the xz stream has no integrity check (xz --check=none), so it cannot be "
                "verified; recompress it with a check"
            )
        return out


# magic, name, decoder of one stream
_FORMATS: list[tuple[bytes, str, Callable[[], _Codec]]] = [
    (b"\x1f\x8b", "gzip", _GzipMember),
    (b"BZh", "bzip2", bz2.BZ2Decompressor),
    (b"\xfd7zXZ\x00", "xz", _XzStream),
]
_REFUSED = [
    (b"\x5d\x00\x00", "legacy .lzma compression has no integrity check; recompress with xz"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed archives are not supported; recompress with xz"),
]
_DECODE_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)


class _Decompressed(io.RawIOBase):
    """The decompressed bytes of an archive, for tarfile's stream mode ("r|").

    Every stream is decoded to its end, which is where gzip and bzip2 keep their
    checks; concatenated streams of the same format are read in turn (as gzip, bzip2
    and xz do); between and after them only NUL padding is allowed (gzip's and xz's
    rule). A stream that ends early, fails its check, or is followed by anything else
    raises ArchiveError. Memory is bounded: at most CHUNK of input and of output.
    """

    def __init__(
        self, raw: io.BufferedIOBase, magic: bytes, label: str, codec: Callable[[], _Codec]
    ) -> None:
        super().__init__()
        self._raw = raw
        self._magic = magic
        self._label = label
        self._new_codec = codec
        self._codec: _Codec | None = None
        self._streams = 0
        self._input = b""
        self._output = b""
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self._pos >= len(self._output):
            self._output, self._pos = self._decode(), 0
        view = memoryview(buffer).cast("B")
        count = min(len(view), len(self._output) - self._pos)
        view[:count] = self._output[self._pos : self._pos + count]
        self._pos += count
        return count

    def _decode(self) -> bytes:
        """The next decompressed bytes; b"" only at the verified end of the input."""
        while True:
            if self._codec is None and not self._next_stream():
                return b""
            codec = self._codec
            assert codec is not None
            if codec.eof:
                self._input, self._codec = codec.unused_data, None
                continue
            if self._input:
                data, self._input = self._input, b""
            elif codec.needs_input:
                data = self._raw.read(CHUNK)
                if not data:
                    raise ArchiveError(f"the {self._label} stream is truncated")
            else:
                data = b""
            try:
                out = codec.decompress(data, CHUNK)
            except _DECODE_ERRORS as exc:
                raise ArchiveError(f"cannot decompress the {self._label} stream: {exc}") from None
            if out:
                return out

    def _next_stream(self) -> bool:
        """Start the next stream, or return False at the end of the input."""
        while True:
            if self._streams:
                self._input = self._input.lstrip(b"\0")
            if len(self._input) >= len(self._magic):
                break
            more = self._raw.read(CHUNK)
            if not more:
                break
            self._input += more
        if not self._input and self._streams:
            return False
        if not self._input.startswith(self._magic):
            raise ArchiveError(f"unexpected data after the end of the {self._label} stream")
        self._codec = self._new_codec()
        self._streams += 1
        return True


class _Source(io.RawIOBase):
    """The archive file; a read error is the archive's, named as such by load()."""

    def __init__(self, raw: io.FileIO) -> None:
        super().__init__()
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        try:
            return self._raw.readinto(buffer) or 0
        except OSError as exc:
            raise ArchiveError(f"cannot read: {exc.strerror or exc}") from None


def archive_reader(file: io.FileIO) -> io.BufferedIOBase:
    """The archive's tar bytes: the file, or a verifying decompressor over it."""
    raw = io.BufferedReader(_Source(file), CHUNK)
    head = raw.peek(tarfile.BLOCKSIZE)[: tarfile.BLOCKSIZE]
    if head[257:262] == b"ustar":  # a tar header, whatever its first name begins with
        return raw
    for magic, problem in _REFUSED:
        if head.startswith(magic):
            raise ArchiveError(problem)
    for magic, label, codec in _FORMATS:
        if head.startswith(magic):
            return io.BufferedReader(_Decompressed(raw, magic, label, codec), CHUNK)
    return raw
