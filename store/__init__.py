"""sapwood's repository layer: objects, index, transactions, refs and history.

This is the public API that fs/ and mountd/ use; they import nothing else of store.
"""

from store.content import read_xattrs
from store.durability import space_errors, syncfs
from store.errors import (
    AmbiguousRevError,
    CorruptObjectError,
    FormatError,
    IndexDamagedError,
    InvalidNameError,
    InvalidRefNameError,
    ModePolicyError,
    MountError,
    NoSuchAttributeError,
    NotADirectoryInTreeError,
    ObjectMissingError,
    OutOfSpaceError,
    PathNotFoundError,
    PermissionDeniedError,
    ReadOnlyRepositoryError,
    RefConflictError,
    RefExistsError,
    RefNotFoundError,
    RefTargetError,
    RepoExistsError,
    RepoNotFoundError,
    SapwoodError,
    SourceError,
    UnsafeToPruneError,
    UnsupportedFileTypeError,
    UsageError,
)
from store.fsck import FsckReport, Problem, fsck
from store.ids import ObjectId, ObjectType, from_hex, to_hex
from store.index import ANY
from store.modes import RepoMode
from store.mtree import MAX_TREE_DEPTH, MutableDir
from store.names import check_name, check_ref_name, show_path, split_path
from store.objects import (
    I64_MAX,
    I64_MIN,
    MAX_SYMLINK_TARGET,
    U32_MAX,
    Commit,
    DirEntry,
    DirMeta,
    DirTree,
    FileHeader,
    FileStat,
)
from store.prune import PruneReport, prune
from store.rebuild import RebuildReport, rebuild_index
from store.repo import Repository
from store.revs import history, rev_parse
from store.snapshot import Snapshot
from store.statcache import StatCacheRecord
from store.transaction import SMALL_FILE, Transaction
from store.trees import (
    Change,
    Node,
    children,
    diff_trees,
    find_child,
    locate_child,
    lookup,
    root_node,
    walk,
)
from store.verify import ContentCheck, check_content, file_matches, open_regular, require_content

__all__ = [
    "ANY",
    "I64_MAX",
    "I64_MIN",
    "MAX_SYMLINK_TARGET",
    "MAX_TREE_DEPTH",
    "SMALL_FILE",
    "U32_MAX",
    "AmbiguousRevError",
    "Change",
    "Commit",
    "ContentCheck",
    "CorruptObjectError",
    "DirEntry",
    "DirMeta",
    "DirTree",
    "FileHeader",
    "FileStat",
    "FormatError",
    "FsckReport",
    "IndexDamagedError",
    "InvalidNameError",
    "InvalidRefNameError",
    "ModePolicyError",
    "MountError",
    "MutableDir",
    "NoSuchAttributeError",
    "Node",
    "NotADirectoryInTreeError",
    "ObjectId",
    "ObjectMissingError",
    "ObjectType",
    "OutOfSpaceError",
    "PathNotFoundError",
    "PermissionDeniedError",
    "Problem",
    "PruneReport",
    "ReadOnlyRepositoryError",
    "RebuildReport",
    "RefConflictError",
    "RefExistsError",
    "RefNotFoundError",
    "RefTargetError",
    "RepoExistsError",
    "RepoMode",
    "RepoNotFoundError",
    "Repository",
    "SapwoodError",
    "Snapshot",
    "SourceError",
    "StatCacheRecord",
    "Transaction",
    "UnsafeToPruneError",
    "UnsupportedFileTypeError",
    "UsageError",
    "check_content",
    "check_name",
    "check_ref_name",
    "children",
    "diff_trees",
    "file_matches",
    "find_child",
    "from_hex",
    "fsck",
    "history",
    "locate_child",
    "lookup",
    "open_regular",
    "prune",
    "read_xattrs",
    "rebuild_index",
    "require_content",
    "rev_parse",
    "root_node",
    "show_path",
    "space_errors",
    "split_path",
    "syncfs",
    "to_hex",
    "walk",
]
