"""Committing a tar archive (``--tree=tar=PATH``) without unpacking it.

The archive is read once, as a stream, plain or compressed with gzip, bzip2 or xz.
Nothing of it is trusted:

- The compressed stream is decoded to its very end, every check verified
  (fs/decompress.py): a damaged archive used to be committed with wrong bytes.
- The tar structure must be whole: a damaged header, an archive that ends without
  its end-of-archive block, a member cut short, or anything but zeros after the
  end-of-archive block (a second archive appended would otherwise be dropped
  silently) fails the import.
- Members are checked one by one and refused with a message naming them: absolute
  paths, '..' components, paths through a symlink or file, a directory and a file
  (or symlink) at one path of the archive, hardlinks to anything but an earlier
  file or symlink of the archive, owners outside 0..2**32-1, modes with bits beyond
  the permission bits (other than the member's own file-type bits, which Go's
  archive/tar writes), bad symlink targets and xattrs, and device nodes or fifos.

Symlink targets are recorded verbatim: an absolute target is normal in an
operating-system tree and is never followed by sapwood. Member content is streamed:
members up to SMALL_FILE are read into memory, larger ones are spooled to an
unnamed file in the transaction's staging directory, so memory stays bounded
whatever the size of a member.

Any failure raises before the transaction's commit point, so nothing is committed.
"""

from __future__ import annotations

import io
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Self, TypeVar

from fs.decompress import ArchiveError, archive_reader
from fs.options import ContentOptions, clean_xattrs
from store import (
    MAX_SYMLINK_TARGET,
    SMALL_FILE,
    U32_MAX,
    DirMeta,
    FileHeader,
    FormatError,
    MutableDir,
    ObjectId,
    SourceError,
    Transaction,
    UnsupportedFileTypeError,
    check_name,
    space_errors,
)

if TYPE_CHECKING:
    pass

_T = TypeVar("_T")
_XATTR_PREFIX = "SCHILY.xattr."
_CHUNK = 1 << 20  # bytes read or spooled at a time
_MAX_EXTENDED_HEADER = 1 << 20  # pax records and GNU long names: names and xattrs
_PAX_HEADER_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
_MAX_XATTR_NAME = 255  # Linux's XATTR_NAME_MAX: longer could never be checked out
_MAX_XATTR_VALUE = 65536  # Linux's XATTR_SIZE_MAX
# tarfile raises this at the all-zero end-of-archive block; typeshed does not list it.
_END_OF_ARCHIVE: type[Exception] = getattr(tarfile, "EOFHeaderError")  # noqa: B009


# ----- the tar structure -------------------------------------------------------------


_HEADER_ERRORS = (tarfile.HeaderError, ValueError, LookupError, ArithmeticError, TypeError)


class _StrictTarInfo(tarfile.TarInfo):
    """Header parsing that fails loudly where tarfile would end the archive quietly.

    Past the first member tarfile treats a damaged header, a truncated one and the end
    of the file like the end-of-archive block, dropping the rest of the archive. Its
    parsing of pax records and sparse maps also raises ValueError and the like.
    """

    @classmethod
    def fromtarfile(cls, archive: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(archive)
        except _END_OF_ARCHIVE:
            raise
        except _HEADER_ERRORS as exc:
            if archive.offset == 0:
                raise ArchiveError(f"not a readable tar archive ({exc})") from None
            raise ArchiveError(
                f"damaged or truncated tar archive at byte {archive.offset} ({exc}): "
                "the archive must be whole up to its end-of-archive block"
            ) from None

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        """Refuse an extended header (pax, GNU long name) larger than any name or set of
        attributes needs: tarfile reads it whole into memory."""
        extended = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, *_PAX_HEADER_TYPES)
        if self.type in extended and self.size > _MAX_EXTENDED_HEADER:
            raise ArchiveError(
                f"an extended header of {self.size} bytes at byte {archive.offset} (at most "
                f"{_MAX_EXTENDED_HEADER} are read)"
            )
        member: tarfile.TarInfo = super()._proc_member(archive)  # type: ignore[misc]
        return member


class _Archive(tarfile.TarFile):
    """tarfile's stream mode without its list of every member read so far."""

    members: list[tarfile.TarInfo]

    def next(self) -> tarfile.TarInfo | None:
        self.members.clear()  # stream mode cannot go back; this list only grew
        return super().next()


def _check_end(archive: tarfile.TarFile) -> None:
    """Read to the end after the end-of-archive block: zeros only (the record padding).

    This also reaches the compressed stream's trailer, which holds its checks.
    """
    while chunk := archive.fileobj.read(_CHUNK):
        if chunk.count(0) != len(chunk):
            raise ArchiveError(
                "data after the end-of-archive block (a second archive appended, or a damaged one)"
            )


# ----- members -----------------------------------------------------------------------


def _member_parts(name: str, what: str) -> list[bytes]:
    """The checked path components of a member name ('./a/b' -> [b'a', b'b'])."""
    if name.startswith("/"):
        raise SourceError(f"{what}: absolute paths are refused")
    raw = name.encode("utf-8", "surrogateescape")
    parts = [p for p in raw.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise SourceError(f"{what}: '..' components are refused")
    for part in parts:
        check_name(part, what)
    return parts


def _xattrs(member: tarfile.TarInfo, what: str) -> tuple[tuple[bytes, bytes], ...]:
    pairs: dict[bytes, bytes] = {}
    for key, value in member.pax_headers.items():
        if not key.startswith(_XATTR_PREFIX):
            continue
        name = key[len(_XATTR_PREFIX) :].encode("utf-8", "surrogateescape")
        if not name or b"\0" in name or len(name) > _MAX_XATTR_NAME:
            raise SourceError(f"{what}: invalid xattr name {name!r} (empty, NUL or too long)")
        data = value.encode("utf-8", "surrogateescape")
        if len(data) > _MAX_XATTR_VALUE:
            raise SourceError(f"{what}: xattr {name!r} is longer than {_MAX_XATTR_VALUE} bytes")
        pairs[name] = data
    return clean_xattrs(tuple(sorted(pairs.items())))


def _file_type(member: tarfile.TarInfo) -> int:
    if member.isdir():
        return stat.S_IFDIR
    return stat.S_IFLNK if member.issym() else stat.S_IFREG


def _mode_of(member: tarfile.TarInfo, what: str) -> int:
    """File type and permission bits. The mode field may repeat the member's own type
    (Go's archive/tar writes 0o100644); any other bit beyond 0o7777 is refused."""
    kind = _file_type(member)
    if member.mode < 0 or member.mode & ~0o7777 not in (0, kind):
        raise SourceError(
            f"{what}: mode {member.mode:#o} has bits beyond the permission bits (0o7777)"
        )
    return kind | (member.mode & 0o7777)


def _check_owner(uid: int, gid: int, what: str) -> None:
    for name, value in (("uid", uid), ("gid", gid)):
        if not 0 <= value <= U32_MAX:
            raise SourceError(f"{what}: {name} {value} is out of range (0 to {U32_MAX})")


def _target(member: tarfile.TarInfo, what: str) -> bytes:
    if not member.issym():
        return b""
    target = member.linkname.encode("utf-8", "surrogateescape")
    if not target or b"\0" in target or len(target) > MAX_SYMLINK_TARGET:
        raise SourceError(
            f"{what}: symlink target is empty, holds NUL or is longer than "
            f"{MAX_SYMLINK_TARGET} bytes"
        )
    return target


class TarImporter:
    """Imports one tar archive into a MutableDir (one --tree=tar= layer).

    A later member of a path replaces an earlier file, symlink or hardlink there (as
    tar extraction does); a directory and a non-directory at one path of the archive
    are refused either way round, so no member is silently dropped and nothing is
    written through a symlink. Against earlier layers the usual overlay holds: a file
    replaces an earlier directory, a path through an earlier file or symlink is refused.
    """

    def __init__(self, txn: Transaction, options: ContentOptions) -> None:
        self._txn = txn
        self._options = options
        self._files: dict[tuple[bytes, ...], ObjectId] = {}  # for hardlinks
        self._dirs: set[tuple[bytes, ...]] = set()  # this archive's directories, implied too
        self._skipped: set[tuple[bytes, ...]] = set()  # hardlinks to these are skipped too
        self._source = Path()

    def load(self, source: Path, target: MutableDir) -> None:
        self._source = source
        try:
            file = open(source, "rb", buffering=0)  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise SourceError(f"{source}: cannot read: {exc.strerror or exc}") from None
        try:
            with file:
                self._read(archive_reader(file), target)
        except ArchiveError as exc:
            raise SourceError(f"{source}: {exc}") from None
        except tarfile.TarError as exc:
            raise SourceError(f"{source}: not a readable tar archive ({exc})") from None

    def _read(self, stream: io.BufferedIOBase, target: MutableDir) -> None:
        with _Archive.open(
            fileobj=stream,
            mode="r|",
            tarinfo=_StrictTarInfo,
            encoding="utf-8",
            errors="surrogateescape",
        ) as archive:
            while (member := archive.next()) is not None:
                self._member(archive, member, target)
            _check_end(archive)

    def _member(self, archive: tarfile.TarFile, member: tarfile.TarInfo, root: MutableDir) -> None:
        what = f"tar member {member.name!r} of {self._source}"
        parts = _member_parts(member.name, what)
        if self._skip(member, parts, what):
            self._skipped.add(tuple(parts))
            return
        if member.size < 0:
            raise SourceError(f"{what}: negative size {member.size}")
        tree_path = b"/" + b"/".join(parts)
        if member.isdir():
            self._directory(member, parts, root, what)
            return
        if not parts:
            raise SourceError(f"{what}: the root is not a directory")
        parent = self._parent(root, parts[:-1], what)
        if tuple(parts) in self._dirs:
            raise SourceError(f"{what}: the archive also has a directory of this name")
        if member.islnk():
            file_id = self._hardlink(member, what)
        else:
            file_id = self._file(archive, member, tree_path, what)
        parent.set_file(parts[-1], file_id)
        self._files[tuple(parts)] = file_id
        self._skipped.discard(tuple(parts))

    def _skip(self, member: tarfile.TarInfo, parts: list[bytes], what: str) -> bool:
        """Whether the options leave this member out: --skip-list, --skip-special, and a
        hardlink to a member left out (GNU tar links device nodes too)."""
        if not (member.isdir() or member.isreg() or member.issym() or member.islnk()):
            if self._options.skip_special:
                return True
            raise UnsupportedFileTypeError(
                f"{what}: device nodes, fifos and tar type {member.type!r} cannot be committed",
                path=what,
            )
        skip = self._options.skip
        if any(b"/" + b"/".join(parts[:i]) in skip for i in range(1, len(parts) + 1)):
            return True
        if member.islnk():
            link = tuple(_member_parts(member.linkname, f"{what}: hardlink target"))
            return link in self._skipped
        return False

    def _directory(
        self, member: tarfile.TarInfo, parts: list[bytes], root: MutableDir, what: str
    ) -> None:
        if tuple(parts) in self._files:
            raise SourceError(f"{what}: the archive also has a file or symlink of this name")
        uid, gid, mode = self._owner_mode(member, b"/" + b"/".join(parts), what)
        meta = _checked(lambda: DirMeta(uid, gid, mode, _xattrs(member, what)), what)
        directory = self._parent(root, parts, what)
        directory.meta = self._txn.write_dirmeta(meta, _where(parts))

    def _owner_mode(
        self, member: tarfile.TarInfo, tree_path: bytes, what: str
    ) -> tuple[int, int, int]:
        mode = _mode_of(member, what)
        uid, gid, mode = self._options.adjust(tree_path, member.uid, member.gid, mode)
        _check_owner(uid, gid, what)
        return uid, gid, mode

    def _hardlink(self, member: tarfile.TarInfo, what: str) -> ObjectId:
        """The object of an earlier file or symlink: a hardlink's own metadata is not
        used (as on disk, where the link is the same inode). A hardlink to a symlink is
        a second symlink, as link(2) makes on Linux."""
        link = tuple(_member_parts(member.linkname, f"{what}: hardlink target"))
        file_id = self._files.get(link)
        if file_id is None:
            raise SourceError(
                f"{what}: hardlink to {member.linkname!r}, which is not an earlier file or "
                "symlink of the archive"
            )
        return file_id

    def _file(
        self, archive: tarfile.TarFile, member: tarfile.TarInfo, tree_path: bytes, what: str
    ) -> ObjectId:
        uid, gid, mode = self._owner_mode(member, tree_path, what)
        target, xattrs = _target(member, what), _xattrs(member, what)
        header = _checked(lambda: FileHeader(uid, gid, mode, target, xattrs), what)
        where = tree_path.decode("utf-8", "backslashreplace")
        if member.issym():
            return self._txn.write_file(header, b"", where)
        stream = archive.extractfile(member)
        if stream is None:  # never for a regular file; kept for the type checker
            raise SourceError(f"{what}: cannot be read")
        with stream:
            if member.size <= SMALL_FILE:
                data = _read_exactly(stream, member.size, what)
                return self._txn.write_file(header, data, where)
            return self._spooled(stream, member.size, header, where, what)

    def _spooled(
        self, stream: IO[bytes], size: int, header: FileHeader, where: str, what: str
    ) -> ObjectId:
        """A large member, copied to an unnamed file in staging and stored from there.

        The spool is read once or twice by write_file_chunks (hash, then copy if new),
        so memory holds one chunk at a time; the file disappears when it is closed.
        """
        with tempfile.TemporaryFile(dir=self._txn.staging) as spool:
            copied = 0
            with space_errors("nothing was committed"):
                while chunk := _read_chunk(stream, what):
                    spool.write(chunk)
                    copied += len(chunk)
                spool.flush()
            if copied != size:
                raise SourceError(f"{what}: {copied} bytes of content, the header says {size}")

            def chunks() -> Iterator[bytes]:
                spool.seek(0)
                while chunk := spool.read(_CHUNK):
                    yield chunk

            return self._txn.write_file_chunks(header, chunks, where)

    def _parent(self, root: MutableDir, parts: list[bytes], what: str) -> MutableDir:
        directory = root
        for i, name in enumerate(parts, 1):
            directory = directory.existing_dir(name, what)
            self._dirs.add(tuple(parts[:i]))
        return directory


def _checked(make: Callable[[], _T], what: str) -> _T:
    """Make a header value; store's own checks (FormatError) then name the member."""
    try:
        return make()
    except FormatError as exc:
        raise SourceError(f"{what}: {exc}") from None


def _read_chunk(stream: IO[bytes], what: str) -> bytes:
    try:
        return stream.read(_CHUNK)
    except tarfile.TarError as exc:
        raise SourceError(f"{what}: cannot read its content ({exc})") from None


def _read_exactly(stream: IO[bytes], size: int, what: str) -> bytes:
    try:
        data = stream.read(size)
    except tarfile.TarError as exc:
        raise SourceError(f"{what}: cannot read its content ({exc})") from None
    if len(data) != size:
        raise SourceError(f"{what}: {len(data)} bytes of content, the header says {size}")
    return data


def _where(parts: list[bytes]) -> str:
    return (b"/" + b"/".join(parts)).decode("utf-8", "backslashreplace")
