"""Content objects on disk, one implementation per repository mode.

Every implementation stages an object into a private staging directory (the
transaction renames it into ``objects/`` later) and reads it back. The on-disk
rules are those of DESIGN.md:

- bare: the file carries the real uid, gid, mode and xattrs; symlinks are symlinks.
- bare-user: a regular file owned by the user, without write, setuid or setgid
  bits; the real header in the ``user.sapwoodmeta`` xattr; a symlink is a small
  regular file holding its target.
- bare-user-only: like bare-user but with no xattrs at all; symlinks are symlinks.
- archive: ``.filez`` files: magic, content size, header, zlib-compressed content,
  plain 0644 files any static web server can serve.

Content objects never carry write bits in the user modes, so a hardlinked
checkout cannot modify them by accident.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import struct
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from store.encoding import Reader
from store.errors import CorruptObjectError, FormatError, ModePolicyError, ObjectMissingError
from store.ids import ObjectId, ObjectType
from store.modes import RepoMode
from store.objects import FileHeader
from store.verify import check_content, open_object_file, require_size

USER_META_XATTR = "user.sapwoodmeta"
ARCHIVE_MAGIC = b"SWZ1"
_ARCHIVE_PREFIX = struct.Struct(">4sQ")
_U32 = struct.Struct(">I")
_MAX_ARCHIVE_HEADER = 16 << 20  # a header is ownership, mode, a target and xattrs
_CHUNK = 1 << 20
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def object_relpath(object_id: bytes, kind: ObjectType, compressed: bool = False) -> str:
    """``ab/cdef…file``: the path of an object below ``objects/``."""
    hexid = object_id.hex()
    suffix = kind.suffix + ("z" if compressed else "")
    return f"{hexid[:2]}/{hexid[2:]}.{suffix}"


def _user_mode(mode: int) -> int:
    """Permission bits of an object file in the user modes: readable, never writable."""
    return (stat.S_IMODE(mode) & 0o555) | 0o400


class ContentStore(ABC):
    """Stages and reads content objects of one repository mode."""

    mode: RepoMode
    compressed = False

    def __init__(self, objects_dir: Path) -> None:
        self.objects_dir = objects_dir
        self._objects_str = str(objects_dir)
        self._suffix = ObjectType.FILE.suffix + ("z" if self.compressed else "")

    def relpath(self, object_id: bytes, kind: ObjectType = ObjectType.FILE) -> str:
        """Where an object of ``kind`` lives below ``objects/`` in this mode: file
        objects in every mode (compressed ``.filez`` in archive mode); metadata objects
        are files in archive mode only (the others keep them in the index alone)."""
        return object_relpath(object_id, kind, self.compressed and kind is ObjectType.FILE)

    def path(self, object_id: bytes, kind: ObjectType = ObjectType.FILE) -> Path:
        return self.objects_dir / self.relpath(object_id, kind)

    def pathstr(self, object_id: bytes) -> str:
        """``path()`` of a file object as a string, without pathlib's cost (hot paths:
        checkout's links, fsck, reads)."""
        hexid = object_id.hex()
        return f"{self._objects_str}/{hexid[:2]}/{hexid[2:]}.{self._suffix}"

    @abstractmethod
    def stage(self, target: str, header: FileHeader, chunks: Iterable[bytes]) -> None:
        """Create ``target`` (absent) as this mode's object file for header + content."""

    @abstractmethod
    def open_content(self, object_id: ObjectId, header: FileHeader, size: int) -> BinaryIO:
        """A binary stream of the object's content (a symlink's content is empty).

        The object file is opened without following links or blocking, and refused
        unless it is a regular file that can hold ``size`` bytes of content; the
        content itself is not re-hashed here (store.verify.verified does that).
        """

    def open_fd(self, object_id: ObjectId, size: int) -> int:
        """An fd of an uncompressed object's file, checked as open_content checks it."""
        fd = open_object_file(self.pathstr(object_id), object_id)
        try:
            require_size(fd, object_id, size)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @abstractmethod
    def disk_header(self, object_id: ObjectId) -> FileHeader | None:
        """The header as the object file records it, or None where the mode keeps none."""

    def prefetch(self, object_ids: Iterable[ObjectId]) -> None:
        """Ask the kernel to start reading these objects now (many reads in flight)."""
        for object_id in object_ids:
            try:
                fd = open_object_file(self.pathstr(object_id), object_id)
            except (OSError, ObjectMissingError, CorruptObjectError):
                continue  # missing, a symlink, a FIFO...: verify() reports what matters
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)

    def verify(self, object_id: ObjectId, header_bytes: bytes, size: int) -> str | None:
        """What is wrong with the stored object (re-hashed in full), or None.

        ``header_bytes`` is the canonical header the index holds for the object.
        """
        try:
            header = FileHeader.decode(header_bytes)
            problem = self._verify_disk(object_id, header, header_bytes)
            if problem:
                return problem
            with self.open_content(object_id, header, size) as stream:
                return check_content(stream, object_id, header_bytes, size)
        except ObjectMissingError:
            return "object file is missing"
        except (CorruptObjectError, FormatError) as exc:
            return str(exc).removeprefix(f"object {object_id.hex()}: ")
        except OSError as exc:
            return f"object file is unreadable: {exc.strerror}"

    def _verify_disk(
        self, object_id: ObjectId, header: FileHeader, header_bytes: bytes
    ) -> str | None:
        """Check what the object file records besides content, against the index."""
        on_disk = self.disk_header(object_id)
        if on_disk is not None and on_disk != header:
            return "corrupted file object: ownership, mode or xattrs on disk differ from its id"
        return None

    def _lstat(self, object_id: ObjectId) -> tuple[str, os.stat_result]:
        path = self.pathstr(object_id)
        try:
            return path, os.lstat(path)
        except FileNotFoundError:
            raise self._missing(object_id) from None

    def _missing(self, object_id: ObjectId) -> ObjectMissingError:
        return ObjectMissingError(f"object {object_id.hex()} is missing from objects/")

    def _open(self, object_id: ObjectId, size: int) -> BinaryIO:
        """The object's file as a stream, refused unless a regular file of ``size`` bytes."""
        return open(self.open_fd(object_id, size), "rb")

    def _open_plain(self, object_id: ObjectId, header: FileHeader, size: int) -> BinaryIO:
        if header.is_symlink:
            return io.BytesIO(b"")
        return self._open(object_id, size)


def _write_regular(target: str, chunks: Iterable[bytes], perms: int) -> int:
    """Create ``target`` with its final permission bits (no chmod after) and fill it."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, perms)
    try:
        if perms & _UMASK:
            os.fchmod(fd, perms)
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        os.utime(fd, ns=(0, 0))  # content carries no time: hardlinked checkouts show mtime 0
    except BaseException:
        os.close(fd)
        raise
    return fd


class BareStore(ContentStore):
    mode = RepoMode.BARE

    def stage(self, target: str, header: FileHeader, chunks: Iterable[bytes]) -> None:
        if header.is_symlink:
            os.symlink(header.symlink_target, target)
            os.chown(target, header.uid, header.gid, follow_symlinks=False)
            for name, value in header.xattrs:
                os.setxattr(target, name, value, follow_symlinks=False)
            return
        fd = _write_regular(target, chunks, 0o600)  # private until chown and chmod below
        try:
            os.fchown(fd, header.uid, header.gid)
            for name, value in header.xattrs:
                os.setxattr(fd, name, value)
            os.fchmod(fd, stat.S_IMODE(header.mode))  # last: chown clears setuid
        finally:
            os.close(fd)

    def open_content(self, object_id: ObjectId, header: FileHeader, size: int) -> BinaryIO:
        return self._open_plain(object_id, header, size)

    def disk_header(self, object_id: ObjectId) -> FileHeader | None:
        path = self.path(object_id)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise self._missing(object_id) from None
        target = os.readlink(os.fsencode(path)) if stat.S_ISLNK(st.st_mode) else b""
        xattrs = read_xattrs(path)
        return FileHeader(st.st_uid, st.st_gid, st.st_mode, target, xattrs)


class BareUserStore(ContentStore):
    mode = RepoMode.BARE_USER

    def stage(self, target: str, header: FileHeader, chunks: Iterable[bytes]) -> None:
        if header.is_symlink:
            chunks, perms = [header.symlink_target], 0o444
        else:
            perms = _user_mode(header.mode)
        fd = _write_regular(target, chunks, 0o600)  # user xattrs need a writable inode
        try:
            _set_meta_xattr(fd, header.encode())
            os.fchmod(fd, perms)
        finally:
            os.close(fd)

    def open_content(self, object_id: ObjectId, header: FileHeader, size: int) -> BinaryIO:
        return self._open_plain(object_id, header, size)

    def disk_header(self, object_id: ObjectId) -> FileHeader | None:
        try:
            raw = os.getxattr(self.path(object_id), USER_META_XATTR, follow_symlinks=False)
        except FileNotFoundError:
            raise self._missing(object_id) from None
        except OSError as exc:
            raise CorruptObjectError(
                f"object {object_id.hex()} lost its metadata: {exc}", object_id=object_id
            ) from exc
        return FileHeader.decode(raw)

    def _verify_disk(
        self, object_id: ObjectId, header: FileHeader, header_bytes: bytes
    ) -> str | None:
        path, st = self._lstat(object_id)
        try:
            recorded = os.getxattr(path, USER_META_XATTR, follow_symlinks=False)
        except OSError:
            recorded = b""  # reported below as a metadata mismatch
        problem = None
        if recorded != header_bytes:
            problem = "corrupted file object: its metadata xattr differs from the index"
        wanted = 0o444 if header.is_symlink else _user_mode(header.mode)
        if problem is None and (not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != wanted):
            problem = "corrupted file object: its mode on disk was changed"
        if problem is None and header.is_symlink:
            with open(open_object_file(path, object_id), "rb") as stored:
                if stored.read(len(header.symlink_target) + 1) != header.symlink_target:
                    problem = "corrupted file object: the stored symlink target differs"
        return problem


def _set_meta_xattr(fd: int, encoded: bytes) -> None:
    """Record a bare-user object's header; a filesystem without room for it (ext4 keeps
    an inode's xattrs in one block, about 4 KB) says ENOSPC or E2BIG, which is not a
    full disk."""
    try:
        os.setxattr(fd, USER_META_XATTR, encoded)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.E2BIG):
            raise
        if os.fstatvfs(fd).f_bavail > 0:
            raise ModePolicyError(
                f"a file's metadata ({len(encoded)} bytes: a long symlink target or large "
                "xattrs) does not fit in an xattr on this filesystem; a bare-user repository "
                "cannot hold it here (a bare-user-only or archive repository can)"
            ) from None
        raise


class BareUserOnlyStore(ContentStore):
    mode = RepoMode.BARE_USER_ONLY

    def stage(self, target: str, header: FileHeader, chunks: Iterable[bytes]) -> None:
        if header.is_symlink:
            os.symlink(header.symlink_target, target)
            return
        os.close(_write_regular(target, chunks, _user_mode(header.mode)))

    def open_content(self, object_id: ObjectId, header: FileHeader, size: int) -> BinaryIO:
        return self._open_plain(object_id, header, size)

    def disk_header(self, object_id: ObjectId) -> FileHeader | None:
        return None

    def _verify_disk(
        self, object_id: ObjectId, header: FileHeader, header_bytes: bytes
    ) -> str | None:
        path, st = self._lstat(object_id)
        if header.is_symlink:
            if (
                not stat.S_ISLNK(st.st_mode)
                or os.readlink(os.fsencode(path)) != header.symlink_target
            ):
                return "corrupted file object: the stored symlink differs"
        elif not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != _user_mode(header.mode):
            return "corrupted file object: its mode on disk was changed"
        return None


class ArchiveStore(ContentStore):
    mode = RepoMode.ARCHIVE
    compressed = True

    def stage(self, target: str, header: FileHeader, chunks: Iterable[bytes]) -> None:
        """Compress as the chunks come; the content size is written into the prefix last."""
        encoded = header.encode()
        deflater, size = zlib.compressobj(6), 0

        def body() -> Iterable[bytes]:
            nonlocal size
            yield _ARCHIVE_PREFIX.pack(ARCHIVE_MAGIC, 0) + _U32.pack(len(encoded))
            yield encoded
            for chunk in chunks:
                size += len(chunk)
                yield deflater.compress(chunk)
            yield deflater.flush()

        fd = _write_regular(target, body(), 0o644)
        try:
            os.pwrite(fd, _ARCHIVE_PREFIX.pack(ARCHIVE_MAGIC, size), 0)
            os.utime(fd, ns=(0, 0))  # the write above moved the time _write_regular set
        finally:
            os.close(fd)

    def _read_prefix(self, stream: BinaryIO, object_id: ObjectId) -> tuple[int, FileHeader]:
        head = stream.read(_ARCHIVE_PREFIX.size + 4)
        if len(head) != _ARCHIVE_PREFIX.size + 4:
            raise CorruptObjectError(f"object {object_id.hex()} is truncated", object_id=object_id)
        magic, size = _ARCHIVE_PREFIX.unpack(head[: _ARCHIVE_PREFIX.size])
        if magic != ARCHIVE_MAGIC:
            raise CorruptObjectError(
                f"object {object_id.hex()} is not an archive object", object_id=object_id
            )
        (hlen,) = _U32.unpack(head[_ARCHIVE_PREFIX.size :])
        if hlen > _MAX_ARCHIVE_HEADER:
            raise CorruptObjectError(
                f"object {object_id.hex()}: a header of {hlen} B", object_id=object_id
            )
        try:
            header = FileHeader.read_from(Reader(stream.read(hlen), "archive header"))
        except FormatError as exc:
            raise CorruptObjectError(
                f"object {object_id.hex()}: {exc}", object_id=object_id
            ) from exc
        return int(size), header

    def open_content(self, object_id: ObjectId, header: FileHeader, size: int) -> BinaryIO:
        stream = open(open_object_file(self.pathstr(object_id), object_id), "rb")  # noqa: SIM115
        try:
            stored_size, _ = self._read_prefix(stream, object_id)
            if stored_size != size:
                raise CorruptObjectError(
                    f"object {object_id.hex()}: content of {stored_size} B, the index says {size}",
                    object_id=object_id,
                )
        except BaseException:
            stream.close()
            raise
        return io.BufferedReader(_Inflater(stream, object_id, size), _CHUNK)

    def open_fd(self, object_id: ObjectId, size: int) -> int:
        raise TypeError("archive objects are compressed: read them with open_content")

    def disk_header(self, object_id: ObjectId) -> FileHeader | None:
        return self.stored_record(object_id)[1]

    def stored_record(self, object_id: ObjectId) -> tuple[int, FileHeader]:
        """The content size and header an archive object carries in front of its data."""
        with open(open_object_file(self.pathstr(object_id), object_id), "rb") as stream:
            return self._read_prefix(stream, object_id)


class _Inflater(io.RawIOBase):
    """The content of an archive object, decompressed as it is read.

    Never holds more than one compressed chunk and one read's worth of output, and
    refuses a stream that inflates beyond the recorded size (a zip bomb), ends early,
    or carries bytes after the compressed data.
    """

    def __init__(self, source: BinaryIO, object_id: ObjectId, size: int) -> None:
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
                self._pending = self._source.read(_CHUNK)
                source_ended = not self._pending  # zlib may still hold output: ask once more
            want = min(len(buffer), self._left + 1)
            try:
                data = self._inflater.decompress(self._pending, want)
            except zlib.error as exc:
                raise self._corrupt(str(exc)) from None
            self._pending = self._inflater.unconsumed_tail
            if source_ended and not data and not self._inflater.eof:
                raise self._corrupt("truncated compressed data")
            if len(data) > self._left:
                raise self._corrupt("inflates beyond its recorded size")
            if data:
                self._left -= len(data)
                buffer[: len(data)] = data
                return len(data)

    def _check_end(self) -> None:
        if self._left:
            raise self._corrupt("truncated compressed data")
        if self._inflater.unused_data or self._source.read(1):
            raise self._corrupt("trailing bytes after the compressed data")

    def _corrupt(self, what: str) -> CorruptObjectError:
        return CorruptObjectError(f"object {self._object_id.hex()}: {what}")

    def close(self) -> None:
        if not self.closed:
            self._source.close()
        super().close()


def read_xattrs(
    path: Path | str | bytes | int, follow_symlinks: bool = False
) -> tuple[tuple[bytes, bytes], ...]:
    """All xattrs of a path or fd, sorted by name; none where the filesystem has none."""
    try:
        names = os.listxattr(path, follow_symlinks=follow_symlinks)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENODATA):  # no xattrs on this filesystem
            return ()
        raise
    pairs = []
    for name in names:
        try:
            pairs.append(
                (os.fsencode(name), os.getxattr(path, name, follow_symlinks=follow_symlinks))
            )
        except OSError as exc:
            if exc.errno != errno.ENODATA:  # removed since listed
                raise
    return tuple(sorted(pairs))


STORES: dict[RepoMode, type[ContentStore]] = {
    cls.mode: cls for cls in (BareStore, BareUserStore, BareUserOnlyStore, ArchiveStore)
}


def content_store(mode: RepoMode, objects_dir: Path) -> ContentStore:
    return STORES[mode](objects_dir)
