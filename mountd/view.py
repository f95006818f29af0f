"""A FUSE-free view of one commit: inodes, attributes, listings, reads, xattrs.

The thin adapter in mountd/fuse_ops.py maps kernel requests onto this and errors
onto errno values; everything here is plain synchronous Python, tested without a
kernel (borg's vfs.py split).

Inode numbers are derived, not allocated: a directory's is a hash of its parent's
inode and its name, a file's a hash of its object id and the commit's time (files
of one object share an inode; directories never do). So a node the kernel has
forgotten can be dropped from the table and comes back with the same number: the
table holds only what the kernel holds, and numbers stay stable for the mount's
life.
"""

from __future__ import annotations

import functools
import logging
import os
import stat
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import blake3

from store import (
    CorruptObjectError,
    DirEntry,
    DirMeta,
    DirTree,
    FileHeader,
    NoSuchAttributeError,
    NotADirectoryInTreeError,
    ObjectId,
    ObjectMissingError,
    PathNotFoundError,
    Repository,
    check_name,
    find_child,
)

log = logging.getLogger(__name__)
ROOT_INODE = 1
_FILE_BIT = 1 << 62
_MASK = _FILE_BIT - 1
_VERIFIED_CACHE = 1 << 16  # objects verified and unchanged since: about 100 bytes each


@dataclass(frozen=True, slots=True)
class Attributes:
    """What stat shows of an entry."""

    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    time_ns: int
    volatile: bool = False  # a listing of refs or commits, or reached through one: expires


@dataclass(frozen=True, slots=True)
class _Node:
    ino: int
    dir: DirEntry | None = None
    file: ObjectId | None = None
    time_ns: int = 0  # the commit's time: what stat shows
    commit: ObjectId | None = None  # set on a commit's root directory in the repository view
    synthetic: tuple[str, str] | None = None  # repository view listings: (kind, ref prefix)


@dataclass(frozen=True)
class ViewOptions:
    owner: tuple[int, int] | None = None  # show every entry as owned by (uid, gid)


def _hash_ino(*parts: bytes) -> int:
    value = int.from_bytes(blake3.blake3(b"\0".join(parts)).digest(8), "big")
    return value


class TreeView:
    """Inodes over committed trees; subclasses decide what the root is."""

    def __init__(self, repo: Repository, root: _Node, options: ViewOptions | None = None) -> None:
        self.repo = repo
        self.options = options or ViewOptions()
        self._nodes: dict[int, _Node] = {ROOT_INODE: root}
        self._lookups: dict[int, int] = {ROOT_INODE: 1}  # the root is never forgotten
        self._handles: dict[int, int | bytes | str] = {}
        self._next_handle = 1
        self._verified: OrderedDict[int, None] = OrderedDict()

    # ----- inodes ---------------------------------------------------------------------
    def _node(self, ino: int) -> _Node:
        try:
            return self._nodes[ino]
        except KeyError:
            raise PathNotFoundError(f"inode {ino} is not known (already forgotten)") from None

    def _dir_ino(self, parent: int, name: bytes) -> int:
        ino = _hash_ino(parent.to_bytes(8, "big"), name) & _MASK
        return ino if ino > ROOT_INODE else ino + 2

    def _file_ino(self, file_id: ObjectId, time_ns: int) -> int:
        return (_hash_ino(file_id, time_ns.to_bytes(12, "big", signed=True)) & _MASK) | _FILE_BIT

    def remember(self, ino: int, node: _Node | None = None) -> None:
        """The kernel now holds one more reference to ``ino`` (lookup, readdirplus)."""
        if node is not None:
            self._nodes.setdefault(ino, node)
        self._lookups[ino] = self._lookups.get(ino, 0) + 1

    def forget(self, ino: int, count: int) -> None:
        left = self._lookups.get(ino, 0) - count
        if left > 0 or ino == ROOT_INODE:
            self._lookups[ino] = max(left, 1)
            return
        self._lookups.pop(ino, None)
        self._nodes.pop(ino, None)

    def volatile_dir(self, ino: int) -> bool:
        """True for listings that change while mounted (refs, commits)."""
        return False

    @property
    def known_inodes(self) -> int:
        return len(self._nodes)

    # ----- directories ----------------------------------------------------------------
    @functools.lru_cache(maxsize=1024)  # noqa: B019 - bounded; the view lives as long as the mount
    def _tree(self, tree_id: ObjectId) -> DirTree:
        return self.repo.read_dirtree(tree_id)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - few distinct dirmetas in a tree
    def _dirmeta(self, meta_id: ObjectId) -> DirMeta:
        return self.repo.read_dirmeta(meta_id)

    @functools.lru_cache(maxsize=1 << 16)  # noqa: B019 - bounded: about 300 bytes an entry
    def _header(self, file_id: ObjectId) -> tuple[FileHeader, int]:
        return self.repo.read_file_header(file_id)

    def _dir(self, ino: int) -> DirEntry:
        node = self._node(ino)
        if node.dir is None:
            raise NotADirectoryInTreeError(f"inode {ino} is not a directory")
        return node.dir

    def _child(
        self, parent: _Node, name: bytes, file_id: ObjectId | None, entry: DirEntry | None
    ) -> _Node:
        if entry is not None:
            return _Node(self._dir_ino(parent.ino, name), dir=entry, time_ns=parent.time_ns)
        assert file_id is not None
        return _Node(self._file_ino(file_id, parent.time_ns), file=file_id, time_ns=parent.time_ns)

    def lookup(self, parent: int, name: bytes) -> Attributes:
        """The entry ``name`` of directory ``parent``; counts as one kernel reference."""
        check_name(name)
        parent_node = self._node(parent)
        if parent_node.synthetic is not None:
            node = self._synthetic_child(parent_node, name)
        else:
            found = find_child(self._tree(self._dir(parent).tree), name)
            if found is None:
                raise PathNotFoundError(f"no entry {name!r}")
            node = self._child(parent_node, name, *found)
        self.remember(node.ino, node)
        return self._attributes(node)

    def entries(self, ino: int, offset: int) -> Iterator[tuple[bytes, Attributes, int, _Node]]:
        """(name, attributes, next offset, node) from ``offset`` on; O(1) to resume."""
        parent = self._node(ino)
        if parent.synthetic is not None:
            listing = self._synthetic_children(parent)
            for index in range(offset, len(listing)):
                name, node = listing[index]
                yield name, self._attributes(node), index + 1, node
            return
        tree = self._tree(self._dir(ino).tree)
        nfiles = len(tree.files)
        total = nfiles + len(tree.dirs)
        for index in range(offset, total):
            if index < nfiles:
                name, file_id = tree.files[index]
                node = self._child(parent, name, file_id, None)
            else:
                name, entry = tree.dirs[index - nfiles]
                node = self._child(parent, name, None, entry)
            yield name, self._attributes(node), index + 1, node

    def _synthetic_child(self, parent: _Node, name: bytes) -> _Node:
        for child_name, node in self._synthetic_children(parent):
            if child_name == name:
                return node
        raise PathNotFoundError(f"no entry {name!r}")

    def _synthetic_children(self, parent: _Node) -> list[tuple[bytes, _Node]]:
        raise PathNotFoundError("no synthetic directories in this view")

    # ----- attributes -------------------------------------------------------------------
    def getattr(self, ino: int) -> Attributes:
        return self._attributes(self._node(ino))

    def _attributes(self, node: _Node) -> Attributes:
        volatile = node.synthetic is not None or node.commit is not None
        if node.synthetic is not None:
            uid, gid = self.options.owner or (os.getuid(), os.getgid())
            return Attributes(node.ino, stat.S_IFDIR | 0o555, 2, uid, gid, 4096, node.time_ns, True)
        if node.dir is not None:
            meta = self._dirmeta(node.dir.meta)
            subdirs = len(self._tree(node.dir.tree).dirs)
            uid, gid = self.options.owner or (meta.uid, meta.gid)
            return Attributes(
                node.ino, meta.mode, 2 + subdirs, uid, gid, 4096, node.time_ns, volatile
            )
        assert node.file is not None
        header, size = self._header(node.file)
        if header.is_symlink:
            size = len(header.symlink_target)
        uid, gid = self.options.owner or (header.uid, header.gid)
        return Attributes(node.ino, header.mode, 1, uid, gid, size, node.time_ns)

    def readlink(self, ino: int) -> bytes:
        node = self._node(ino)
        if node.file is None:
            raise PathNotFoundError("not a symlink")
        header, _ = self.repo.read_file_header(node.file)
        if not header.is_symlink:
            raise PathNotFoundError("not a symlink")
        return header.symlink_target

    def xattrs(self, ino: int) -> dict[bytes, bytes]:
        node = self._node(ino)
        if node.synthetic is not None:
            return {}
        if node.dir is not None:
            found = dict(self.repo.read_dirmeta(node.dir.meta).xattrs)
            if node.commit is not None:
                found.update(commit_xattrs(self.repo, node.commit))
            return found
        assert node.file is not None
        return dict(self.repo.read_file_header(node.file)[0].xattrs)

    def getxattr(self, ino: int, name: bytes) -> bytes:
        try:
            return self.xattrs(ino)[name]
        except KeyError:
            raise NoSuchAttributeError(f"no attribute {name!r}") from None

    # ----- reading ------------------------------------------------------------------------
    def open(self, ino: int) -> int:
        """A handle for reading a regular file; its object is verified first.

        An object verified earlier (and unchanged since: same inode and ctime) costs one
        stat here; its file is opened only if the kernel asks for data it has not cached.
        """
        node = self._node(ino)
        if node.file is None:
            raise NotADirectoryInTreeError("is a directory")
        header, size = self._header(node.file)
        source: int | bytes | str
        if self.repo.content.compressed:
            with self.repo.open_file(node.file) as stream:
                source = stream.read()
            if header.object_id(source) != node.file:
                raise CorruptObjectError(f"object {node.file.hex()} does not match its id")
        else:
            source = self._verified_source(node.file, header, size)
        handle = self._next_handle
        self._next_handle += 1
        self._handles[handle] = source
        return handle

    def _verified_source(self, file_id: ObjectId, header: FileHeader, size: int) -> int | str:
        """The object's path if verified before, else an open fd of it, re-hashed now."""
        path = self.repo.content.pathstr(file_id)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            log.error("object %s is missing", file_id.hex())
            raise ObjectMissingError(f"object {file_id.hex()} is missing") from None
        key = hash((file_id, st.st_ino, st.st_ctime_ns))
        if key in self._verified:
            self._verified.move_to_end(key)
            return path
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._rehash(file_id, header.encode(), size, fd)
        except BaseException:
            os.close(fd)
            raise
        self._verified[key] = None
        if len(self._verified) > _VERIFIED_CACHE:
            self._verified.popitem(last=False)
        return fd

    def _rehash(self, file_id: ObjectId, header_bytes: bytes, size: int, fd: int) -> None:
        """Never serve wrong bytes: the content must hash to the object's id."""
        hasher, offset = blake3.blake3(header_bytes), 0
        while chunk := os.pread(fd, 1 << 20, offset):
            hasher.update(chunk)
            offset += len(chunk)
        if offset != size or hasher.digest() != file_id:
            log.error("object %s is corrupt: refusing to serve it", file_id.hex())
            raise CorruptObjectError(f"object {file_id.hex()} does not match its id")

    def read(self, handle: int, offset: int, size: int) -> bytes:
        source = self._handles[handle]
        if isinstance(source, bytes):
            return source[offset : offset + size]
        if isinstance(source, str):  # verified earlier: open on first read
            source = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
            self._handles[handle] = source
        return os.pread(source, size, offset)

    def release(self, handle: int) -> None:
        source = self._handles.pop(handle, None)
        if isinstance(source, int):
            os.close(source)

    def close(self) -> None:
        for handle in list(self._handles):
            self.release(handle)


class CommitView(TreeView):
    """One commit, read-only, as a tree of inodes."""

    def __init__(
        self, repo: Repository, commit_id: ObjectId, options: ViewOptions | None = None
    ) -> None:
        commit = repo.read_commit(commit_id)
        self.time_ns = commit.timestamp * 1_000_000_000
        root = _Node(ROOT_INODE, dir=DirEntry(commit.tree, commit.meta), time_ns=self.time_ns)
        super().__init__(repo, root, options)


COMMIT_XATTR = b"user.sapwood."


def commit_xattrs(repo: Repository, commit_id: ObjectId) -> dict[bytes, bytes]:
    """What a commit says of itself, as xattrs of its root in the repository view."""
    commit = repo.read_commit(commit_id)
    found = {
        COMMIT_XATTR + b"commit": commit_id.hex().encode(),
        COMMIT_XATTR + b"subject": commit.subject.encode(),
        COMMIT_XATTR + b"timestamp": str(commit.timestamp).encode(),
    }
    if commit.parent is not None:
        found[COMMIT_XATTR + b"parent"] = commit.parent.hex().encode()
    if commit.version is not None:
        found[COMMIT_XATTR + b"version"] = commit.version.encode()
    return found
