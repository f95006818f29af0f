"""Reading object files without trusting them.

An object file is data on a disk that other programs, other users and bad sectors
can reach. Every read of one goes through this module:

- :func:`open_object_file` opens it without following a symlink and without
  blocking (a FIFO put in its place would hang the reader forever), and refuses
  anything that is not a regular file;
- :func:`check_content` answers "does this fd, stream or bytes hold object X's
  content" (blake3 over the canonical header, then the content, and the recorded
  size: :class:`ContentCheck`); fsck, checkout's --verify and --union-identical,
  diff against a directory and the mount all ask it, and :func:`file_matches` asks
  it of a file in a directory that is not trusted either (opened as object files are);
- :class:`VerifyingReader` is a stream that asks ContentCheck as the bytes go by and
  fails at the end of the stream if they were not the object's (cat, archive reads,
  and the copies of a checkout, which hash what they copy).
"""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Callable
from typing import BinaryIO

import blake3

from store.errors import CorruptObjectError, ObjectMissingError
from store.ids import ObjectId

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20


def open_object_file(path: str, object_id: bytes) -> int:
    """An fd of the regular file at ``path``: never a symlink's target, never a FIFO."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise ObjectMissingError(
            f"object {object_id.hex()} is missing from objects/", object_id=object_id
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CorruptObjectError(
                f"object {object_id.hex()}: its file is a symlink, not an object",
                object_id=object_id,
            ) from None
        raise
    try:
        kind = stat.S_IFMT(os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    if kind != stat.S_IFREG:
        os.close(fd)
        raise CorruptObjectError(
            f"object {object_id.hex()}: its file is not a regular file", object_id=object_id
        )
    return fd


def require_size(fd: int, object_id: bytes, size: int) -> None:
    """Refuse an object file whose size is not the recorded one (uncompressed modes)."""
    found = os.fstat(fd).st_size
    if found != size:
        raise CorruptObjectError(
            f"object {object_id.hex()}: its file holds {_bytes(found)}, the index says {size}",
            object_id=object_id,
        )


class ContentCheck:
    """Hashes content as it is fed and says whether it was object ``object_id``."""

    __slots__ = ("_hasher", "object_id", "seen", "size")

    def __init__(self, object_id: bytes, header_bytes: bytes, size: int) -> None:
        self.object_id = object_id
        self.size = size
        self.seen = 0
        self._hasher = blake3.blake3(header_bytes)

    def update(self, chunk: bytes | memoryview) -> None:
        self._hasher.update(chunk)
        self.seen += len(chunk)

    def problem(self) -> str | None:
        """What is wrong with the content fed so far, taken as the whole object; or None."""
        if self.seen != self.size:
            return f"corrupted file object: {_bytes(self.seen)}, the index says {self.size}"
        if self._hasher.digest() != self.object_id:
            return "corrupted file object: its content does not hash to its id"
        return None

    def require(self) -> None:
        """Raise CorruptObjectError unless the content fed was exactly the object's."""
        problem = self.problem()
        if problem is not None:
            raise CorruptObjectError(
                f"object {self.object_id.hex()}: {problem}", object_id=self.object_id
            )


def check_content(
    source: int | BinaryIO | bytes,
    object_id: bytes,
    header_bytes: bytes,
    size: int,
    between_chunks: Callable[[], None] | None = None,
) -> str | None:
    """What keeps ``source`` from being exactly object ``object_id``'s content, or None.

    The one answer to "is this object X": ``header_bytes`` (the object's canonical
    header, as the index holds it) then the content must hash to the id, and the
    content must be ``size`` bytes. ``source`` is an fd (read with pread from offset 0;
    its position is neither used nor moved), a binary stream (read from where it is to
    its end) or the bytes themselves. At most ``size`` + 1 bytes are read: one more
    shows a source that is too long without reading the rest of it. An fd of up to a
    chunk (1 MiB) is read with one pread. ``between_chunks`` is called after each chunk:
    what it raises gives the check up (pull-local's hardlinks, when the pull stops).
    """
    check = ContentCheck(object_id, header_bytes, size)
    between = between_chunks or _nothing
    if isinstance(source, bytes):
        check.update(source)
    elif isinstance(source, int):
        while chunk := os.pread(source, min(_CHUNK, size + 1 - check.seen), check.seen):
            check.update(chunk)
            if check.seen > size:
                break
            between()
    else:
        while check.seen <= size and (chunk := source.read(min(_CHUNK, size + 1 - check.seen))):
            check.update(chunk)
            between()
    return check.problem()


def _nothing() -> None:
    return None


def require_content(
    source: int | BinaryIO | bytes,
    object_id: bytes,
    header_bytes: bytes,
    size: int,
    between_chunks: Callable[[], None] | None = None,
) -> None:
    """:func:`check_content`, raising CorruptObjectError unless ``source`` is the object's."""
    problem = check_content(source, object_id, header_bytes, size, between_chunks)
    if problem is not None:
        raise CorruptObjectError(f"object {object_id.hex()}: {problem}", object_id=object_id)


def open_regular(name: str | bytes, dir_fd: int | None = None) -> int | None:
    """An fd of the regular file ``name`` (relative to ``dir_fd``), or None if it is gone
    or is anything else by now: a file in a directory that someone else may change.

    Never follows a symlink (O_NOFOLLOW) and never blocks (O_NONBLOCK: a FIFO put in
    its place must not hang the reader).
    """
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOENT, errno.ENXIO):  # replaced or removed
            return None
        raise
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
        return None
    return fd


def file_matches(
    name: str | bytes, dir_fd: int | None, object_id: bytes, header_bytes: bytes, size: int
) -> bool:
    """Whether ``name`` in ``dir_fd`` is a regular file holding exactly object
    ``object_id``'s content (:func:`open_regular`, then :func:`check_content`)."""
    fd = open_regular(name, dir_fd)
    if fd is None:
        return False
    try:
        return check_content(fd, object_id, header_bytes, size) is None
    finally:
        os.close(fd)


class VerifyingReader(io.RawIOBase):
    """A read-only stream of an object's content that is checked as it is read.

    Reading past the end of the content raises CorruptObjectError if the bytes did
    not hash to the object's id (or were too many or too few), so a caller that
    reads to the end never takes wrong bytes for the object's without being told.
    """

    def __init__(self, source: BinaryIO, check: ContentCheck) -> None:
        super().__init__()
        self._source = source
        self._check = check
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._ended:
            return 0
        data = self._source.read(min(len(buffer), self._check.size - self._check.seen + 1))
        if not data:
            self._ended = True
            self._check.require()
            return 0
        self._check.update(data)
        if self._check.seen > self._check.size:
            self._check.require()
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._source.close()
        super().close()


def verified(source: BinaryIO, object_id: ObjectId, header_bytes: bytes, size: int) -> BinaryIO:
    """``source`` wrapped so that reading it to the end verifies it."""
    reader = VerifyingReader(source, ContentCheck(object_id, header_bytes, size))
    return io.BufferedReader(reader, 1 << 20)


def _bytes(count: int) -> str:
    return "1 byte" if count == 1 else f"{count} bytes"
