"""Committing a tar archive (``--tree=tar=PATH``) without unpacking it.

The archive is read as a stream (any compression tarfile knows). Members with an
absolute path or a '..' component, hardlinks to paths outside the archive, paths
that pass through a symlink, and device nodes or fifos are refused with the
member's name. Symlink targets are recorded verbatim: an absolute target is normal
in an operating-system tree and is never followed by sapwood.
"""

from __future__ import annotations

import stat
import tarfile
from pathlib import Path

from fs.options import ContentOptions, clean_xattrs
from store import (
    DirMeta,
    FileHeader,
    MutableDir,
    ObjectId,
    SourceError,
    Transaction,
    UnsupportedFileTypeError,
    check_name,
)

_XATTR_PREFIX = "SCHILY.xattr."


def _member_parts(name: str, what: str) -> list[bytes]:
    """The checked path components of a member name ('./a/b' -> [b'a', b'b'])."""
    if name.startswith("/"):
        raise SourceError(f"{what} {name!r}: absolute paths are refused")
    raw = name.encode("utf-8", "surrogateescape")
    parts = [p for p in raw.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise SourceError(f"{what} {name!r}: '..' components are refused")
    for part in parts:
        check_name(part, f"{what} {name!r}")
    return parts


def _xattrs(member: tarfile.TarInfo) -> tuple[tuple[bytes, bytes], ...]:
    pairs = {
        key[len(_XATTR_PREFIX) :].encode("utf-8", "surrogateescape"): value.encode(
            "utf-8", "surrogateescape"
        )
        for key, value in member.pax_headers.items()
        if key.startswith(_XATTR_PREFIX)
    }
    return clean_xattrs(tuple(sorted(pairs.items())))


class TarImporter:
    """Imports one tar archive into a MutableDir (one --tree=tar= layer)."""

    def __init__(self, txn: Transaction, options: ContentOptions) -> None:
        self._txn = txn
        self._options = options
        self._by_path: dict[tuple[bytes, ...], ObjectId] = {}

    def load(self, source: Path, target: MutableDir) -> None:
        try:
            with tarfile.open(source, "r|*") as archive:
                for member in archive:
                    self._member(archive, member, target)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise SourceError(f"{source}: not a readable tar archive: {exc}") from None

    def _member(self, archive: tarfile.TarFile, member: tarfile.TarInfo, root: MutableDir) -> None:
        parts = _member_parts(member.name, "tar member")
        tree_path = b"/" + b"/".join(parts)
        if not (member.isdir() or member.isreg() or member.issym() or member.islnk()):
            if self._options.skip_special:
                return
            raise UnsupportedFileTypeError(
                f"tar member {member.name!r}: device nodes and fifos cannot be committed"
            )
        if tree_path in self._options.skip or any(
            b"/" + b"/".join(parts[:i]) in self._options.skip for i in range(1, len(parts))
        ):
            return
        uid, gid, mode = self._options.adjust(tree_path, member.uid, member.gid, _mode_of(member))
        xattrs = _xattrs(member)
        where = tree_path.decode("utf-8", "backslashreplace")
        if member.isdir():
            directory = self._parent(root, parts, where)
            directory.meta = self._txn.write_dirmeta(DirMeta(uid, gid, mode, xattrs), where)
            return
        if not parts:
            raise SourceError(f"tar member {member.name!r}: the root is not a directory")
        parent = self._parent(root, parts[:-1], where)
        file_id = self._file_id(
            archive, member, FileHeader(uid, gid, mode, _target(member), xattrs), where
        )
        if isinstance(parent.entries.get(parts[-1]), MutableDir) and member.islnk():
            raise SourceError(f"tar member {member.name!r}: replaces a directory with a hardlink")
        parent.set_file(parts[-1], file_id)
        self._by_path[tuple(parts)] = file_id

    def _file_id(
        self, archive: tarfile.TarFile, member: tarfile.TarInfo, header: FileHeader, where: str
    ) -> ObjectId:
        if member.islnk():
            link = tuple(_member_parts(member.linkname, f"hardlink {member.name!r} ->"))
            if link not in self._by_path:
                raise SourceError(
                    f"tar member {member.name!r}: hardlink to {member.linkname!r}, "
                    "which is not an earlier file of the archive"
                )
            return self._by_path[link]
        if member.issym():
            return self._txn.write_file(header, b"", where)
        stream = archive.extractfile(member)
        data = stream.read() if stream is not None else b""
        return self._txn.write_file(header, data, where)

    def _parent(self, root: MutableDir, parts: list[bytes], where: str) -> MutableDir:
        directory = root
        for name in parts:
            directory = directory.existing_dir(name, where)
        return directory


def _mode_of(member: tarfile.TarInfo) -> int:
    if member.isdir():
        kind = stat.S_IFDIR
    elif member.issym():
        kind = stat.S_IFLNK
    else:
        kind = stat.S_IFREG
    return kind | (member.mode & 0o7777)


def _target(member: tarfile.TarInfo) -> bytes:
    return member.linkname.encode("utf-8", "surrogateescape") if member.issym() else b""
