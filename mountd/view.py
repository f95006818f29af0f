"""A FUSE-free view of committed trees: inodes, attributes, listings, reads, xattrs.

The thin adapter in mountd/fuse_ops.py maps kernel requests onto this and errors onto
errno values; everything here is plain synchronous Python, tested without a kernel
(borg's vfs.py split).

Inode numbers come from mountd/inodes.py: a directory is an instance, a file a position
in its directory's tree, so the view keeps nothing per file and the kernel forgetting an
inode needs no bookkeeping. What the view keeps is bounded: the instance arrays (24
bytes per directory shown), and LRU caches of decoded trees, directory metadata, file
headers and directory instances.

Damage stays where it is: an entry whose record is corrupt or missing (a file's header,
a directory's dirmeta or tree) is an error for that entry alone. A listing still shows
its name, with attributes marked ``broken`` that the kernel must not keep, so that
looking at it again asks the view, which raises.
"""

from __future__ import annotations

import logging
import os
import stat
from bisect import bisect_left
from collections.abc import Callable, Iterator
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
from mountd.lru import Lru
from mountd.sources import ObjectSources
from store import (
    CorruptObjectError,
    DirEntry,
    DirMeta,
    DirTree,
    FileHeader,
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
_HEADER_BATCH = 32  # file headers read in one index snapshot while listing
# Index records read between two calls of index_hook; a file's record counts one, a
# tree one per _TREE_RECORD_ENTRIES entries. A record read at random maps about 40 KiB
# of the index into the process (the kernel maps the folio around a fault), a tree of
# 200 entries about 100 KiB: 32 records, and a batch, map a few MiB.
INDEX_CHECK_RECORDS = 32
_TREE_RECORD_ENTRIES = 64
_DIR_NODES = 1 << 14  # directory instances kept decoded: about 200 bytes each
_DIRMETAS = 4096  # decoded dirmetas: a tree has few distinct ones
TREE_CACHE_ENTRIES = 1 << 16  # entries of directory listings kept: about 90 bytes each
HEADER_CACHE_ENTRIES = 1 << 14  # file headers kept for lookups and reads: about 300 bytes
_ID = 32  # bytes of an object id
MAX_FILE_SIZE = (1 << 63) - 1  # what st_size (off_t) holds; a record may claim more


class Listing:
    """A directory's tree as the view keeps it: about 90 bytes a file (its name, and its
    id in one string of all the ids), where a decoded DirTree holds about 200 (a tuple,
    a name and an id object per file). Made from a DirTree, so checked as one."""

    __slots__ = ("_file_ids", "dir_names", "dirs", "file_names")

    def __init__(self, tree: DirTree) -> None:
        self.file_names = tuple(name for name, _ in tree.files)
        self._file_ids = b"".join(file_id for _, file_id in tree.files)
        self.dir_names = tuple(name for name, _ in tree.dirs)
        self.dirs = tuple(entry for _, entry in tree.dirs)

    def __len__(self) -> int:
        return len(self.file_names) + len(self.dirs)

    def file_id(self, index: int) -> ObjectId:
        return ObjectId(self._file_ids[_ID * index : _ID * (index + 1)])

    def file_ids(self, start: int, stop: int) -> list[ObjectId]:
        stop = min(stop, len(self.file_names))
        ids = self._file_ids
        return [ObjectId(ids[_ID * index : _ID * (index + 1)]) for index in range(start, stop)]

    def locate(self, name: bytes) -> tuple[bool, int] | None:
        """(is a directory, index among the files or the directories) of ``name``."""
        for names, is_dir in ((self.file_names, False), (self.dir_names, True)):
            index = bisect_left(names, name)
            if index < len(names) and names[index] == name:
                return is_dir, index
        return None


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


class TreeView:
    """Inodes over committed trees; subclasses decide what the root is."""

    def __init__(
        self, repo: Repository, root: DirEntry | None, time_ns: int, options: ViewOptions | None
    ) -> None:
        self.repo = repo
        self.options = options or ViewOptions()
        self.instances = InstanceTable()
        self.sources = ObjectSources(repo)
        # Index records read so far: each maps index pages into the process. Every
        # INDEX_CHECK_RECORDS, before the next read, index_hook runs (the daemon lets go
        # of the pages past a budget: mountd/mapped.py).
        self.records_read = 0
        self.index_hook: Callable[[], object] | None = None
        self._next_check = INDEX_CHECK_RECORDS
        self._roots: dict[int, DirNode] = {}
        self._dir_nodes: Lru[int, DirNode] = Lru(_DIR_NODES)
        # Listings weigh their entries: a budget of entries, however many trees that is.
        self._trees: Lru[ObjectId, Listing] = Lru(TREE_CACHE_ENTRIES, TREE_CACHE_ENTRIES)
        self._headers: Lru[ObjectId, tuple[FileHeader, int]] = Lru(HEADER_CACHE_ENTRIES)
        self._dirmetas: Lru[ObjectId, DirMeta] = Lru(_DIRMETAS)  # few distinct in a tree
        # Listings' stat batches: a few directories being listed at once.
        self._stat_batches: Lru[tuple[ObjectId, int], list[FileStat | SapwoodError]] = Lru(128)
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

    # ----- cached objects ------------------------------------------------------------------
    def _tree(self, tree_id: ObjectId) -> Listing:
        return self._trees.get_or_make(tree_id, self._read_tree, len)

    def _read_tree(self, tree_id: ObjectId) -> Listing:
        self._reading(1)
        listing = Listing(self.repo.read_dirtree(tree_id))
        self.records_read += len(listing) // _TREE_RECORD_ENTRIES  # its pages: the next check
        return listing

    def _dirmeta(self, meta_id: ObjectId) -> DirMeta:
        return self._dirmetas.get_or_make(meta_id, self._read_dirmeta)

    def _read_dirmeta(self, meta_id: ObjectId) -> DirMeta:
        self._reading(1)
        return self.repo.read_dirmeta(meta_id)

    def _header(self, file_id: ObjectId) -> tuple[FileHeader, int]:
        return self._headers.get_or_make(file_id, self._read_header)

    def _read_header(self, file_id: ObjectId) -> tuple[FileHeader, int]:
        self._reading(1)
        return self.repo.read_file_header(file_id)

    def _reading(self, records: int) -> None:
        """Count ``records`` about to be read; run index_hook first if it is due."""
        if self.records_read >= self._next_check and self.index_hook is not None:
            self._next_check = self.records_read + INDEX_CHECK_RECORDS
            self.index_hook()
        self.records_read += records

    def _file_stats(self, tree_id: ObjectId, start: int) -> list[FileStat | SapwoodError]:
        return self._stat_batches.get_or_make((tree_id, start), self._read_file_stats)

    def _read_file_stats(self, batch: tuple[ObjectId, int]) -> list[FileStat | SapwoodError]:
        """Stats of the files ``start`` to ``start + _HEADER_BATCH`` of a tree, or for a
        file whose record cannot be read, why.

        Batches are aligned, so a listing the kernel takes in several requests reads
        each file's header once. A batch with a damaged record is read again file by
        file, so that the damage is that file's alone.
        """
        tree_id, start = batch
        ids = self._tree(tree_id).file_ids(start, start + _HEADER_BATCH)
        self._reading(len(ids))
        try:
            found: list[FileStat | SapwoodError] = list(self.repo.read_file_stats(ids))
        except SapwoodError:
            found = [self._one_stat(file_id) for file_id in ids]
        for index, (stats, file_id) in enumerate(zip(found, ids, strict=True)):
            if isinstance(stats, FileStat) and stats.size > MAX_FILE_SIZE:
                found[index] = CorruptObjectError(
                    f"object {file_id.hex()}: a size of {stats.size} bytes is not a file's"
                )
        return found

    def _one_stat(self, file_id: ObjectId) -> FileStat | SapwoodError:
        try:
            return self.repo.read_file_stats([file_id])[0]
        except SapwoodError as exc:
            return exc.with_traceback(None)  # cached: it must not keep the frames alive

    def _stat(self, parent: DirNode, index: int) -> FileStat:
        """The stat of file ``index`` of a directory, from the listing's batches."""
        assert parent.entry is not None
        batch, offset = divmod(index, _HEADER_BATCH)
        found = self._file_stats(parent.entry.tree, batch * _HEADER_BATCH)[offset]
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
        for start in range(offset - offset % _HEADER_BATCH, nfiles, _HEADER_BATCH):
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
