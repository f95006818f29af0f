"""Content objects on disk, one implementation per repository mode.

Every implementation stages an object into a private staging directory (the
transaction renames it into ``objects/`` later) and reads it back. The on-disk
rules are those of DESIGN.md:

- bare: the file carries the real uid, gid, mode and xattrs; symlinks are symlinks.
- bare-user: a regular file owned by the user, with the recorded permission bits
  masked with 0775, plus u+r (OSTree's rule, :func:`user_object_mode`); the real
  header in the ``user.sapwoodmeta`` xattr; a symlink is a small regular file (0444)
  holding its target.
- bare-user-only: like bare-user but with no xattrs at all; symlinks are symlinks.
- archive: ``.filez`` files (store/filez.py): magic, content size, header, the
  content compressed (zstd; zlib in older objects), plain 0644 files any static web
  server can serve.

In the user modes an object recorded writable (0644) is writable by the repository's
owner, so that a hardlinked checkout shows the recorded bits: a write through such a
farm changes the object, which fsck, the mount and ``checkout --verify`` then refuse
(docs/decisions.md, "Round-trip checkouts"). Objects of the former read-only rule
(``(mode & 0555) | 0400``) are still valid.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from store import filez
from store.errors import CorruptObjectError, FormatError, ModePolicyError, ObjectMissingError
from store.framed import FramedContent
from store.ids import ObjectId, ObjectType
from store.modes import RepoMode
from store.objects import FileHeader
from store.verify import check_content, open_object_file, require_size

USER_META_XATTR = "user.sapwoodmeta"
_CHUNK = 1 << 20
_SYMLINK_OBJECT_MODE = 0o444  # a bare-user symlink is a regular file holding its target


def object_relpath(object_id: bytes, kind: ObjectType, compressed: bool = False) -> str:
    """``ab/cdef…file``: the path of an object below ``objects/``."""
    hexid = object_id.hex()
    suffix = kind.suffix + ("z" if compressed else "")
    return f"{hexid[:2]}/{hexid[2:]}.{suffix}"


USER_MODE_MASK = 0o775  # what a user-mode checkout keeps: no setuid, setgid, sticky, o+w


def user_checkout_mode(mode: int) -> int:
    """Permission bits a user-mode checkout gives a file recorded with ``mode``: the
    recorded bits without setuid, setgid, sticky and world-write (as OSTree's bare-user)."""
    return stat.S_IMODE(mode) & USER_MODE_MASK


def user_object_mode(mode: int) -> int:
    """Permission bits of a regular file's object in bare-user and bare-user-only
    repositories (OSTree's rule): :func:`user_checkout_mode` plus u+r, so that a
    hardlinked user-mode checkout shows the recorded bits (a file without u+r is never
    hardlinked). A file recorded writable gives a writable object: see
    docs/decisions.md, "Round-trip checkouts"."""
    return user_checkout_mode(mode) | stat.S_IRUSR


def _legacy_user_mode(mode: int) -> int:
    """The bits objects were written with before (read-only): still valid, never written."""
    return (stat.S_IMODE(mode) & 0o555) | stat.S_IRUSR


def user_mode_problem(st: os.stat_result, mode: int) -> str | None:
    """What is wrong with a user-mode object file's type and bits, or None."""
    if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) not in (
        user_object_mode(mode),
        _legacy_user_mode(mode),
    ):
        return "corrupted file object: its mode on disk was changed"
    return None


class ContentStore(ABC):
    """Stages and reads content objects of one repository mode."""

    mode: RepoMode
    compressed = False

    def __init__(self, objects_dir: Path) -> None:
        self.objects_dir = objects_dir
        self._objects_str = str(objects_dir)
        self._suffix = ObjectType.FILE.suffix + ("z" if self.compressed else "")
        # the process's umask as note_umask() last read it; None: unknown, so every
        # object file created is chmodded to its bits
        self.umask: int | None = None

    def note_umask(self) -> None:
        """Read the process's umask again (a transaction does, as it starts): an object
        file is created with its final bits and chmodded only if the umask takes some
        away. Read once at import, a umask made stricter later (a daemon, a library
        user) gave 0644 objects 0600 and fsck called them corrupt (attack15 1). A
        umask changed by another thread while a transaction writes is not seen."""
        self.umask = process_umask()

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
    def stage(
        self,
        target: str,
        header: FileHeader,
        chunks: Iterable[bytes],
        header_bytes: bytes | None = None,
    ) -> None:
        """Create ``target`` (absent) as this mode's object file for header + content;
        ``header_bytes``: ``header.encode()`` when the caller has it already."""

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

    def verify(
        self,
        object_id: ObjectId,
        header_bytes: bytes,
        size: int,
        between_chunks: Callable[[], None] | None = None,
    ) -> str | None:
        """What is wrong with the stored object (re-hashed in full), or None.

        ``header_bytes`` is the canonical header the index holds for the object;
        ``between_chunks``: as check_content's (what it raises ends the check).
        """
        try:
            header = FileHeader.decode(header_bytes)
            problem = self._verify_disk(object_id, header, header_bytes)
            if problem:
                return problem
            with self.open_content(object_id, header, size) as stream:
                return check_content(stream, object_id, header_bytes, size, between_chunks)
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


def process_umask() -> int | None:
    """The process's umask, read from /proc/self/status (Linux 4.7 and later) without
    setting it: os.umask() sets it, and a file another thread created meanwhile would
    take the wrong one. None where it cannot be read."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _write_regular(target: str, chunks: Iterable[bytes], perms: int, umask: int | None) -> int:
    """Create ``target`` with its final permission bits and fill it; chmodded only when
    ``umask`` (the process's, None if unknown) takes some of them away."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, perms)
    try:
        if umask is None or perms & umask:
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

    def stage(
        self,
        target: str,
        header: FileHeader,
        chunks: Iterable[bytes],
        header_bytes: bytes | None = None,
    ) -> None:
        if header.is_symlink:
            os.symlink(header.symlink_target, target)
            os.chown(target, header.uid, header.gid, follow_symlinks=False)
            for name, value in header.xattrs:
                os.setxattr(target, name, value, follow_symlinks=False)
            return
        fd = _write_regular(target, chunks, 0o600, self.umask)  # private until chown, chmod
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

    def stage(
        self,
        target: str,
        header: FileHeader,
        chunks: Iterable[bytes],
        header_bytes: bytes | None = None,
    ) -> None:
        """A user xattr can be set only on an inode its owner may write: a file whose
        bits let the owner write (0644, 0755: nearly every file) is created with them,
        one system call fewer than 0600 and a chmod after the xattr; others are."""
        if header.is_symlink:
            chunks, perms = [header.symlink_target], _SYMLINK_OBJECT_MODE
        else:
            perms = user_object_mode(header.mode)
        writable = bool(perms & stat.S_IWUSR)
        fd = _write_regular(target, chunks, perms if writable else 0o600, self.umask)
        try:
            _set_meta_xattr(fd, header_bytes if header_bytes is not None else header.encode())
            if not writable:
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
        if problem is None and header.is_symlink:
            if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != _SYMLINK_OBJECT_MODE:
                problem = "corrupted file object: its mode on disk was changed"
        elif problem is None:
            problem = user_mode_problem(st, header.mode)
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

    def stage(
        self,
        target: str,
        header: FileHeader,
        chunks: Iterable[bytes],
        header_bytes: bytes | None = None,
    ) -> None:
        if header.is_symlink:
            os.symlink(header.symlink_target, target)
            return
        os.close(_write_regular(target, chunks, user_object_mode(header.mode), self.umask))

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
            return None
        return user_mode_problem(st, header.mode)


class ArchiveStore(ContentStore):
    """``.filez`` objects (store/filez.py): SWZ2 (zstd chunks) written, SWZ1 read too."""

    mode = RepoMode.ARCHIVE
    compressed = True

    def stage(
        self,
        target: str,
        header: FileHeader,
        chunks: Iterable[bytes],
        header_bytes: bytes | None = None,
    ) -> None:
        """Compress as the chunks come; the content size is written into the prefix last."""
        encoded = header_bytes if header_bytes is not None else header.encode()
        size = 0

        def counted() -> Iterable[bytes]:
            nonlocal size
            for chunk in chunks:
                size += len(chunk)
                yield chunk

        def body() -> Iterable[bytes]:
            yield filez.prefix(0, encoded)
            yield from filez.frames(counted())

        fd = _write_regular(target, body(), 0o644, self.umask)
        try:
            os.pwrite(fd, filez.prefix(size, encoded)[: filez.PREFIX.size], 0)
            os.utime(fd, ns=(0, 0))  # the write above moved the time _write_regular set
        finally:
            os.close(fd)

    def _read_prefix(self, stream: BinaryIO, object_id: ObjectId) -> tuple[bytes, int, FileHeader]:
        return filez.read_prefix(stream, object_id)

    def open_content(self, object_id: ObjectId, header: FileHeader, size: int) -> BinaryIO:
        stream = open(open_object_file(self.pathstr(object_id), object_id), "rb")  # noqa: SIM115
        try:
            magic, stored_size, _ = self._read_prefix(stream, object_id)
            if stored_size != size:
                raise CorruptObjectError(
                    f"object {object_id.hex()}: content of {stored_size} B, the index says {size}",
                    object_id=object_id,
                )
        except BaseException:
            stream.close()
            raise
        return io.BufferedReader(filez.content_reader(stream, magic, size, object_id), _CHUNK)

    def open_framed(self, object_id: ObjectId, size: int) -> FramedContent | None:
        """The object's content for reading at random (store/framed.py), its frames not
        located yet; None for an SWZ1 object (one zlib stream: read it with
        open_content). Refused as open_content refuses."""
        fd = open_object_file(self.pathstr(object_id), object_id)
        try:
            with open(fd, "rb", closefd=False) as stream:
                magic, stored_size, _ = self._read_prefix(stream, object_id)
                start = stream.tell()
            if stored_size != size:
                raise CorruptObjectError(
                    f"object {object_id.hex()}: content of {stored_size} B, the index says {size}",
                    object_id=object_id,
                )
        except BaseException:
            os.close(fd)
            raise
        if magic != filez.MAGIC_ZSTD:
            os.close(fd)
            return None
        return FramedContent(fd, object_id, size, start)

    def open_fd(self, object_id: ObjectId, size: int) -> int:
        raise TypeError("archive objects are compressed: read them with open_content")

    def disk_header(self, object_id: ObjectId) -> FileHeader | None:
        return self.stored_record(object_id)[1]

    def stored_record(self, object_id: ObjectId) -> tuple[int, FileHeader]:
        """The content size and header an archive object carries in front of its data."""
        with open(open_object_file(self.pathstr(object_id), object_id), "rb") as stream:
            _, size, header = self._read_prefix(stream, object_id)
            return size, header


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
