"""A FUSE-free view of committed trees: inodes, attributes, listings, reads, xattrs.

The thin adapter in mountd/fuse_ops.py maps kernel requests onto this and errors onto
errno values; everything here is plain synchronous Python, tested without a kernel
(borg's vfs.py split).

Inode numbers come from mountd/inodes.py: a directory is an instance, a file a position
in its directory's tree, so the view keeps nothing per file and the kernel forgetting an
inode needs no bookkeeping. What the view keeps is bounded: the instance arrays (24
bytes per directory shown), and LRU caches of decoded trees, directory metadata, file
headers and directory instances. The records it reads come through mountd/records.py
(CachedRecords: cached, and counted for the daemon's index budget), a tree kept as a
mountd/listing.py Listing; file contents come from mountd/sources.py.

Damage stays where it is: an entry whose record is corrupt or missing (a file's header,
a directory's dirmeta or tree) is an error for that entry alone. A listing still shows
its name, with attributes marked ``broken`` that the kernel must not keep, so that
looking at it again asks the view, which raises.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from mountd.inodes import (
    InstanceTable,
    dir_ino,
    file_ino,
    file_position,
    instance_of,
    is_dir_ino,
)
from mountd.listing import Listing
from mountd.lru import Lru
from mountd.records import HEADER_BATCH, CachedRecords
from mountd.sources import ObjectSources, Preparation
from store import (
    DirEntry,
    FileStat,
    NoSuchAttributeError,
    NotADirectoryInTreeError,
    ObjectId,
    PathNotFoundError,
    Repository,
    SapwoodError,
    check_name,
)

log = logging.getLogger(__name__)
ROOT_INODE = 1
_DIR_NODES = 1 << 14  # directory instances kept decoded: about 200 bytes each


class Attributes(NamedTuple):
    """What stat shows of an entry (a tuple: built for every entry of every listing)."""

    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    time_ns: int
    volatile: bool = False  # a listing of refs or commits, or a commit's root: expires
    broken: bool = False  # a placeholder in a listing for an entry that cannot be read


def _broken(ino: int, kind: int, time_ns: int) -> Attributes:
    """What a listing shows of an entry it cannot read: its name, and nothing to keep."""
    return Attributes(ino, kind, 1, 0, 0, 0, time_ns, broken=True)


@dataclass(frozen=True, slots=True)
class DirNode:
    """A directory instance: the tree it shows, and the time stat shows for it."""

    instance: int
    entry: DirEntry | None  # None for a synthetic listing of the repository view
    time_ns: int  # the commit's time
    commit: ObjectId | None = None  # set on a commit's root in the repository view
    synthetic: tuple[str, str] | None = None  # repository view listings: (kind, ref prefix)

    @property
    def ino(self) -> int:
        return dir_ino(self.instance)

    @property
    def volatile(self) -> bool:
        return self.synthetic is not None or self.commit is not None


@dataclass(frozen=True)
class ViewOptions:
    owner: tuple[int, int] | None = None  # show every entry as owned by (uid, gid)


class TreeView(CachedRecords):
    """Inodes over committed trees; subclasses decide what the root is."""

    def __init__(
        self, repo: Repository, root: DirEntry | None, time_ns: int, options: ViewOptions | None
    ) -> None:
        super().__init__(repo)
        self.options = options or ViewOptions()
        self.instances = InstanceTable()
        self.sources = ObjectSources(repo)
        self._roots: dict[int, DirNode] = {}
        self._dir_nodes: Lru[int, DirNode] = Lru(_DIR_NODES)
        self.root = self._add_root(root, time_ns, synthetic=None if root else ("root", ""))

    def _add_root(
        self,
        entry: DirEntry | None,
        time_ns: int,
        commit: ObjectId | None = None,
        synthetic: tuple[str, str] | None = None,
    ) -> DirNode:
        instance = 0 if not self._roots else self.instances.add_root()
        node = DirNode(instance, entry, time_ns, commit, synthetic)
        self._roots[instance] = node
        return node

    # ----- directory instances ------------------------------------------------------------
    def _dir_of(self, ino: int) -> DirNode:
        if not is_dir_ino(ino):
            raise NotADirectoryInTreeError(f"inode {ino} is not a directory")
        instance = instance_of(ino)
        if not self.instances.known(instance):
            raise PathNotFoundError(f"inode {ino} was never shown")
        return self._dir_node(instance)

    def _dir_node(self, instance: int) -> DirNode:
        """Decode an instance, climbing to the nearest one known (a walk of its path)."""
        node = self._known_dir(instance)
        chain = []
        while node is None:
            chain.append(instance)
            instance, _ = self.instances.parent(instance)
            node = self._known_dir(instance)
        for child in reversed(chain):
            assert node.entry is not None
            _, position = self.instances.parent(child)
            entry = self._tree(node.entry.tree).dirs[position]
            node = self._keep(DirNode(child, entry, node.time_ns))
        return node

    def _known_dir(self, instance: int) -> DirNode | None:
        node = self._roots.get(instance)
        if node is None:
            node = self._dir_nodes.get(instance)
        return node

    def _keep(self, node: DirNode) -> DirNode:
        self._dir_nodes.add(node.instance, node)
        return node

    def _subdir(self, parent: DirNode, tree: Listing, position: int) -> DirNode:
        instance = self.instances.child(parent.instance, position, len(tree.dirs))
        node = self._known_dir(instance)
        if node is None:
            node = self._keep(DirNode(instance, tree.dirs[position], parent.time_ns))
        return node

    def _file_of(self, ino: int) -> tuple[DirNode, int, ObjectId]:
        """(parent directory, index in its files, object id) of a file inode."""
        if is_dir_ino(ino):
            raise NotADirectoryInTreeError(f"inode {ino} is a directory")
        parent_instance, index = file_position(ino)
        if not self.instances.known(parent_instance):
            raise PathNotFoundError(f"inode {ino} was never shown")
        parent = self._dir_node(parent_instance)
        if parent.entry is None:
            raise PathNotFoundError(f"inode {ino} was never shown")
        tree = self._tree(parent.entry.tree)
        if not 0 <= index < len(tree.file_names):
            raise PathNotFoundError(f"inode {ino} was never shown")
        return parent, index, tree.file_id(index)

    def _stat(self, parent: DirNode, index: int) -> FileStat:
        """The stat of file ``index`` of a directory, from the listing's batches."""
        assert parent.entry is not None
        batch, offset = divmod(index, HEADER_BATCH)
        found = self._file_stats(parent.entry.tree, batch * HEADER_BATCH)[offset]
        if isinstance(found, SapwoodError):
            raise type(found)(*found.args)  # a fresh one each time: the cached one is shared
        return found

    # ----- names ---------------------------------------------------------------------------
    def lookup(self, parent_ino: int, name: bytes) -> Attributes:
        """The entry ``name`` of directory ``parent_ino``."""
        check_name(name)
        parent = self._dir_of(parent_ino)
        if parent.entry is None:
            return self._dir_attributes(self._synthetic_child(parent, name))
        tree = self._tree(parent.entry.tree)
        found = tree.locate(name)
        if found is None:
            raise PathNotFoundError(f"no entry {name!r}")
        is_dir, index = found
        if is_dir:
            return self._dir_attributes(self._subdir(parent, tree, index))
        ino = file_ino(parent.instance, index)
        return self._file_attributes(ino, self._stat(parent, index), parent)

    def entries(self, ino: int, offset: int) -> Iterator[tuple[bytes, Attributes, int]]:
        """(name, attributes, next offset) from ``offset`` on; O(1) to resume."""
        parent = self._dir_of(ino)
        if parent.entry is None:
            listing = self._synthetic_children(parent)
            for index in range(offset, len(listing)):
                name, node = listing[index]
                yield name, self._dir_attributes(node), index + 1
            return
        tree = self._tree(parent.entry.tree)
        nfiles = len(tree.file_names)
        for start in range(offset - offset % HEADER_BATCH, nfiles, HEADER_BATCH):
            stats = self._file_stats(parent.entry.tree, start)
            for index in range(max(start, offset), start + len(stats)):
                ino = file_ino(parent.instance, index)
                found = stats[index - start]
                attrs = (
                    _broken(ino, stat.S_IFREG, parent.time_ns)
                    if isinstance(found, SapwoodError)
                    else self._file_attributes(ino, found, parent)
                )
                yield tree.file_names[index], attrs, index + 1
        for position in range(max(offset - nfiles, 0), len(tree.dirs)):
            node = self._subdir(parent, tree, position)
            try:
                attrs = self._dir_attributes(node)
            except SapwoodError:  # its dirmeta or tree is damaged: an error when looked at
                attrs = _broken(node.ino, stat.S_IFDIR, node.time_ns)
            yield tree.dir_names[position], attrs, nfiles + position + 1

    def volatile_dir(self, ino: int) -> bool:
        """True for listings that change while mounted (refs, commits)."""
        return is_dir_ino(ino) and self._dir_of(ino).synthetic is not None

    def _synthetic_child(self, parent: DirNode, name: bytes) -> DirNode:
        for child_name, node in self._synthetic_children(parent):
            if child_name == name:
                return node
        raise PathNotFoundError(f"no entry {name!r}")

    def _synthetic_children(self, parent: DirNode) -> list[tuple[bytes, DirNode]]:
        raise PathNotFoundError("no synthetic directories in this view")

    def _listing_time(self, node: DirNode) -> int:
        """The time a synthetic listing shows: when it last changed."""
        return node.time_ns

    # ----- attributes ------------------------------------------------------------------------
    def getattr(self, ino: int) -> Attributes:
        if is_dir_ino(ino):
            return self._dir_attributes(self._dir_of(ino))
        parent, index, _ = self._file_of(ino)
        return self._file_attributes(ino, self._stat(parent, index), parent)

    def _dir_attributes(self, node: DirNode) -> Attributes:
        if node.entry is None:
            uid, gid = self.options.owner or (os.getuid(), os.getgid())
            mode = stat.S_IFDIR | 0o555
            return Attributes(node.ino, mode, 2, uid, gid, 4096, self._listing_time(node), True)
        meta = self._dirmeta(node.entry.meta)
        subdirs = len(self._tree(node.entry.tree).dirs)
        uid, gid = self.options.owner or (meta.uid, meta.gid)
        return Attributes(
            node.ino, meta.mode, 2 + subdirs, uid, gid, 4096, node.time_ns, node.volatile
        )

    def _file_attributes(self, ino: int, stats: FileStat, parent: DirNode) -> Attributes:
        uid, gid = self.options.owner or (stats.uid, stats.gid)
        return Attributes(ino, stats.mode, 1, uid, gid, stats.size, parent.time_ns)

    def readlink(self, ino: int) -> bytes:
        _, _, file_id = self._file_of(ino)
        header, _ = self._header(file_id)
        if not header.is_symlink:
            raise PathNotFoundError("not a symlink")
        return header.symlink_target

    def xattrs(self, ino: int) -> dict[bytes, bytes]:
        if not is_dir_ino(ino):
            return dict(self._header(self._file_of(ino)[2])[0].xattrs)
        node = self._dir_of(ino)
        if node.entry is None:
            return {}
        found = dict(self._dirmeta(node.entry.meta).xattrs)
        if node.commit is not None:
            found.update(commit_xattrs(self.repo, node.commit))
        return found

    def getxattr(self, ino: int, name: bytes) -> bytes:
        try:
            return self.xattrs(ino)[name]
        except KeyError:
            raise NoSuchAttributeError(f"no attribute {name!r}") from None

    # ----- reading -----------------------------------------------------------------------------
    def open(self, ino: int) -> None:
        """Make a regular file readable: its object is verified (or refused) now."""
        parent, index, file_id = self._file_of(ino)
        found = self._stat(parent, index)
        if not stat.S_ISREG(found.mode):
            raise PathNotFoundError("not a regular file")
        self._reading(1)  # an archive object's record, a small file's content
        self.sources.prepare(ino, file_id, found.header, found.size)

    def preparation(self, ino: int) -> Preparation | None:
        """What reading ``ino`` needs done first that may take long (a large object to
        verify, or to decompress), for the caller to run off its loop before it reads;
        None when a read now costs little: readable already (a small file is made
        readable here, or refused with the error), or not a regular file (``read``
        then says so)."""
        if is_dir_ino(ino) or self.sources.is_open(ino):
            return None
        parent, index, file_id = self._file_of(ino)
        found = self._stat(parent, index)
        if not stat.S_ISREG(found.mode):
            return None
        self._reading(1)
        return self.sources.preparation(ino, file_id, found.header, found.size)

    def read(self, ino: int, offset: int, size: int) -> bytes:
        """Bytes of a regular file, opened (and verified) on the first read."""
        if not self.sources.is_open(ino):
            self.open(ino)
        return self.sources.read(ino, offset, size)

    def close(self) -> None:
        self.sources.close()


class CommitView(TreeView):
    """One commit, read-only, as a tree of inodes."""

    def __init__(
        self, repo: Repository, commit_id: ObjectId, options: ViewOptions | None = None
    ) -> None:
        commit = repo.read_commit(commit_id)
        self.time_ns = commit.timestamp * 1_000_000_000
        super().__init__(repo, DirEntry(commit.tree, commit.meta), self.time_ns, options)
        self.getattr(ROOT_INODE)  # a damaged root is an error now, before anything is mounted


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
