"""Where a mounted file's bytes come from: verified objects, kept open for a while.

The kernel reads a file by inode (sapwood answers ENOSYS to open, so there are no file
handles; see mountd/fuse_ops.py). The first read of an object re-hashes it: wrong bytes
are never served, a corrupt or missing object reads as an error. An object verified
once, and unchanged since (same inode number and ctime of its file), costs an open and
a stat the next time it is needed. A small object is verified with one read, and the
read that asked for it is served from those bytes. The open files of the most recently
read inodes are kept (a bounded LRU); an open file survives a prune that unlinks its
object.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict

import blake3

from store import CorruptObjectError, ObjectId, ObjectMissingError, Repository

log = logging.getLogger(__name__)
_OPEN_SOURCES = 256  # open files (or decompressed archive objects) kept
_VERIFIED = 1 << 16  # objects verified and unchanged since: about 100 bytes each
_WHOLE_READ = 1 << 20  # objects up to this size are verified with one read, kept for the next
_CHUNK = 1 << 20


class ObjectSources:
    """Open, verified sources of file objects, keyed by the inode that shows them."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._open: OrderedDict[int, int | bytes] = OrderedDict()
        self._verified: OrderedDict[int, None] = OrderedDict()
        self._fresh: tuple[int, bytes] | None = None  # a small object just read whole

    def prepare(self, ino: int, file_id: ObjectId, header: bytes, size: int) -> None:
        """Make ``ino`` readable now (verifying its object), or raise why it is not."""
        if ino in self._open:
            self._open.move_to_end(ino)
            return
        source, whole = self._source(file_id, header, size)
        self._open[ino] = source
        self._fresh = None if whole is None else (ino, whole)
        if len(self._open) > _OPEN_SOURCES:
            _, evicted = self._open.popitem(last=False)
            if isinstance(evicted, int):
                os.close(evicted)

    def read(self, ino: int, offset: int, size: int) -> bytes:
        """Bytes of a prepared inode."""
        if self._fresh is not None and self._fresh[0] == ino:
            return self._fresh[1][offset : offset + size]  # read whole to verify it
        source = self._open[ino]
        if isinstance(source, bytes):
            return source[offset : offset + size]
        return os.pread(source, size, offset)

    def is_open(self, ino: int) -> bool:
        return ino in self._open

    def close(self) -> None:
        while self._open:
            _, source = self._open.popitem()
            if isinstance(source, int):
                os.close(source)

    def _source(
        self, file_id: ObjectId, header: bytes, size: int
    ) -> tuple[int | bytes, bytes | None]:
        """An open fd (or the decompressed bytes) of a verified object, and its whole
        content if verifying it just read it all."""
        if self.repo.content.compressed:
            with self.repo.open_file(file_id) as stream:
                data = stream.read()
            if blake3.blake3(header + data).digest() != file_id:
                log.error("object %s is corrupt: refusing to serve it", file_id.hex())
                raise CorruptObjectError(f"object {file_id.hex()} does not match its id")
            return data, None
        path = self.repo.content.pathstr(file_id)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            log.error("object %s is missing", file_id.hex())
            raise ObjectMissingError(f"object {file_id.hex()} is missing") from None
        try:
            return fd, self._verify(file_id, header, size, fd)
        except BaseException:
            os.close(fd)
            raise

    def _verify(self, file_id: ObjectId, header: bytes, size: int, fd: int) -> bytes | None:
        """Re-hash the object unless verified before; a small object's bytes come back."""
        st = os.fstat(fd)
        key = hash((file_id, st.st_ino, st.st_ctime_ns))
        if key in self._verified:
            self._verified.move_to_end(key)
            return None
        hasher, offset, whole = blake3.blake3(header), 0, None
        if size <= _WHOLE_READ:  # one read; one byte more shows a grown object
            whole = os.pread(fd, size + 1, 0)
            hasher.update(whole)
            offset = len(whole)
        else:
            while chunk := os.pread(fd, min(_CHUNK, size + 1 - offset), offset):
                hasher.update(chunk)
                offset += len(chunk)
        if offset != size or hasher.digest() != file_id:
            log.error("object %s is corrupt: refusing to serve it", file_id.hex())
            raise CorruptObjectError(f"object {file_id.hex()} does not match its id")
        self._verified[key] = None
        if len(self._verified) > _VERIFIED:
            self._verified.popitem(last=False)
        return whole
