"""Copying file content out of objects without trusting it.

An object file is bytes on a disk that a flipped bit or an edit through a hardlinked
checkout can change, so every byte copied out of it is fed to store's ContentCheck
(blake3 over the object's recorded header, then the content: the object's id exactly
when the content is the object's). Content is streamed in chunks of at most 1 MiB,
never read whole. (Comparing a file with an object without copying it is
store.check_content's, for checkout, diff, the mount and fsck alike.)

A copy reflinks where the filesystem can (FICLONE: btrfs, xfs; the clone shares the
object's blocks, which are then read once to hash them); elsewhere it is a loop that
reads, hashes and writes each chunk. That loop reads the object once; verifying first
and then copying in the kernel (copy_file_range) reads it twice and was no faster
(docs/decisions.md, Checkout).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from typing import BinaryIO

from store import ContentCheck

FICLONE = 0x40049409  # _IOW(0x94, 9, int), not exported by Python's fcntl
_NO_REFLINK = {errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.ENOTTY, errno.EBADF}
CHUNK = 1 << 20


def _hash_fd(fd: int, size: int, check: ContentCheck) -> None:
    """Feed the first ``size`` bytes of ``fd`` to ``check`` (fewer if it ends before).

    The caller knows the size (the object's, recorded): bytes the file gains
    afterwards are not what was copied, and a file that lost some fails ``check``.
    """
    for chunk in _chunks(fd, size):
        check.update(chunk)


def _chunks(fd: int, size: int) -> Iterator[bytes]:
    """The first ``size`` bytes of ``fd`` (fewer if it ends before), a chunk at a time."""
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(CHUNK, size - offset), offset)
        if not chunk:
            return
        offset += len(chunk)
        yield chunk


class Copier:
    """Copies content into new, empty files; remembers whether reflinks work here."""

    def __init__(self) -> None:
        self.reflink = True  # until the first refusal: then the loop, for the whole checkout

    def copy_fd(self, src: int, dst: int, size: int, check: ContentCheck) -> None:
        """Copy the first ``size`` bytes of ``src`` into ``dst``, feeding them to ``check``.

        The caller decides what to do when ``check`` does not match afterwards (the
        bytes are in ``dst`` by then: remove it).
        """
        if size and self.reflink and self._clone(src, dst):
            if os.fstat(dst).st_size != size:  # the object grew after it was opened
                os.ftruncate(dst, size)
            _hash_fd(dst, size, check)  # the clone itself: what DEST now holds
            return
        for chunk in _chunks(src, size):
            check.update(chunk)
            _write_all(dst, chunk)

    def _clone(self, src: int, dst: int) -> bool:
        try:
            fcntl.ioctl(dst, FICLONE, src)
        except OSError as exc:
            if exc.errno not in _NO_REFLINK:
                raise
            self.reflink = False
            return False
        return True


def copy_stream(stream: BinaryIO, dst: int) -> None:
    """Copy a stream into ``dst`` (archive objects: the stream inflates and verifies itself)."""
    while chunk := stream.read(CHUNK):
        _write_all(dst, chunk)


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written < len(data):  # rare: a signal, or a filesystem that writes in pieces
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]
