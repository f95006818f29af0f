"""Random access into an archive object: a read inflates the chunks it covers, not the
whole object.

An SWZ2 ``.filez`` object (store/filez.py) is its content in 1 MiB chunks, each one
zstd frame behind its u32 length: knowing where each frame starts, the bytes at any
offset cost one frame's decompression (about a millisecond), whatever the object's size.

Verifying still takes the whole content (the id hashes the header and all of it):
:meth:`FramedContent.verify` streams it once, as ``Repository.open_file`` would, and
notes where each frame starts on the way (8 bytes a MiB: 32 KiB for a 4 GiB object;
every other one past 1 MiB of them, MAX_NOTED).
:meth:`FramedContent.locate` notes the same without inflating anything, for a caller
that verified this very file before (same inode, same ctime: the mount's rule for
uncompressed objects, whose verified fd it then reads with pread). A frame inflated
later is checked again against its share of the size (a zstd bomb is refused before
it inflates) but not hashed again: the file held open since it was verified is
trusted as an uncompressed object's verified fd is.

Objects of the older SWZ1 encoding (one zlib stream) have no frames: they are read
from the start only (``Repository.open_file``).
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable

from store.errors import CorruptObjectError
from store.filez import CHUNK, chunk_length, decompressor, inflate_chunk
from store.ids import ObjectId
from store.verify import ContentCheck

_LENGTH = 4  # the u32 in front of each frame
# Where frames start, noted for at most this many (8 bytes each: 1 MiB, whatever the
# object claims). Past it every other one is let go of and a read walks from the one
# noted before its frame, reading the lengths between (a 4-byte pread each: 7 at most
# for 1 TiB). Noted for every frame, a hostile object of zeros grew the table 8 bytes
# a MiB inflated while it was verified, outside every budget (attack12).
MAX_NOTED = 1 << 17


class FramedContent:
    """An SWZ2 object's content, read at random once its frames are located.

    Owns ``fd`` (the object's file, opened without following links) and closes it on
    :meth:`close`. ``start`` is where the first chunk's length is, after the prefix.
    Not thread-safe: one thread at a time (verify in a worker, then read on the loop).
    """

    def __init__(self, fd: int, object_id: ObjectId, size: int, start: int) -> None:
        self.fd = fd
        self.object_id = object_id
        self.size = size
        self._start = start
        self._starts: array[int] | None = None  # where frame i * _stride starts
        self._stride = 1

    @property
    def chunks(self) -> int:
        """How many chunks (frames) the content has."""
        return -(-self.size // CHUNK)

    @property
    def located(self) -> bool:
        """Whether the frames are located (:meth:`verify` or :meth:`locate` done)."""
        return self._starts is not None

    @property
    def located_bytes(self) -> int:
        """The memory where the frames start takes (8 bytes a MiB of content, 1 MiB at
        most: MAX_NOTED)."""
        return 0 if self._starts is None else self._starts.itemsize * len(self._starts)

    def stat(self) -> os.stat_result:
        """The object file's stat (its inode and ctime say whether it changed)."""
        return os.fstat(self.fd)

    def verify(self, header_bytes: bytes, between_chunks: Callable[[], None] | None = None) -> None:
        """Inflate and hash the whole content, locating the frames on the way; raise
        CorruptObjectError (nothing located) unless it is exactly the object's.
        ``between_chunks`` is called after each chunk: what it raises gives the
        verification up (the mount's, when no one waits for it: mountd/preparing.py)."""
        check = ContentCheck(self.object_id, header_bytes, self.size)
        dctx = decompressor()

        def inflate(index: int, frame: bytes) -> None:
            check.update(inflate_chunk(dctx, frame, self._want(index), self.object_id))
            if between_chunks is not None:
                between_chunks()

        starts, stride = self._frames(inflate)
        check.require()
        self._starts, self._stride = starts, stride

    def locate(self) -> None:
        """Locate the frames from their lengths alone (nothing inflated nor hashed)."""
        self._starts, self._stride = self._frames(None)

    def _frames(self, each: Callable[[int, bytes], None] | None) -> tuple[array[int], int]:
        """Where every stride-th frame starts, and the stride (MAX_NOTED); ``each`` is
        given every frame read."""
        starts, stride = array("Q"), 1
        position = self._start
        for index in range(self.chunks):
            if index % stride == 0:
                if len(starts) == MAX_NOTED:
                    starts, stride = starts[::2], stride * 2
                if index % stride == 0:
                    starts.append(position)
            length = self._length_at(position)
            position += _LENGTH
            if each is not None:
                each(index, self._pread(length, position, "compressed chunk"))
            position += length
        if os.pread(self.fd, 1, position):
            raise self._corrupt("trailing bytes after the compressed data")
        return starts, stride

    def chunk(self, index: int) -> bytes:
        """The content of chunk ``index`` (the bytes from ``index`` MiB on, one MiB at most)."""
        if self._starts is None:
            raise ValueError("the frames are not located: verify() or locate() first")
        noted, skip = divmod(index, self._stride)
        position = self._starts[noted]
        for _ in range(skip):
            position += _LENGTH + self._length_at(position)
        length = self._length_at(position)
        frame = self._pread(length, position + _LENGTH, "compressed chunk")
        return inflate_chunk(decompressor(), frame, self._want(index), self.object_id)

    def _length_at(self, position: int) -> int:
        return chunk_length(self._pread(_LENGTH, position, "chunk"), self.object_id)

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` (fewer at the end)."""
        end = min(offset + length, self.size)
        pieces = []
        while offset < end:
            index, skip = divmod(offset, CHUNK)
            piece = self.chunk(index)[skip : skip + end - offset]
            pieces.append(piece)
            offset += len(piece)
        return b"".join(pieces)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _want(self, index: int) -> int:
        return min(CHUNK, self.size - index * CHUNK)

    def _pread(self, size: int, position: int, what: str) -> bytes:
        data = os.pread(self.fd, size, position)
        if len(data) != size:
            raise self._corrupt(f"truncated {what}")
        return data

    def _corrupt(self, what: str) -> CorruptObjectError:
        return CorruptObjectError(
            f"object {self.object_id.hex()}: {what}", object_id=self.object_id
        )
