"""sapwood: immutable, content-addressed commits of operating-system trees.

The public Python API: code outside this project uses only ``import sapwood``.
store/, fs/ and mountd/ are the layers beneath it; their other names may change.

    with sapwood.Repository.open(path) as repo:
        result = sapwood.commit(repo, "os/main", Path("/srv/tree"), subject="1.0")
        node = sapwood.lookup(repo, result.commit_id, "/etc/os-release")

Errors are classes derived from ``SapwoodError``, with what went wrong as attributes
(``RefNotFoundError.rev``, ``ObjectMissingError.object_id``, ...).

Names that are not classes or functions:

- ``ObjectId``: a 32-byte blake3 digest (a ``bytes`` NewType); ``to_hex`` and
  ``from_hex`` convert to and from its 64 lower-case hex digits.
- ``ANY``: as ``repo.set_ref(name, target, expected=ANY)`` (the default), move the
  ref whatever it holds; its type is ``AnyTarget``. ``ExpectedRef`` is what
  ``expected`` may be: a commit id, None (the ref must not exist) or ``ANY``.
- ``NO_PARENT``: as ``commit(parent=NO_PARENT)``, a root commit, whatever the branch
  held; its type is ``NoParent``.
- ``Union``: the union modes of ``CheckoutOptions.union``: "none" (DEST must not
  exist), "union" (the commit's files win), "add" (DEST's files win), "identical"
  (existing files must be identical; needs hardlinks).
- ``U32_MAX``, ``I64_MIN``, ``I64_MAX``: the bounds of uids and gids, and of
  timestamps, that a commit can hold.
"""

from fs.checkout import (
    CheckoutConflictError,
    CheckoutError,
    CheckoutOptions,
    CheckoutStats,
    SubpathNotADirectoryError,
    Union,
)
from fs.commit import (
    NO_PARENT,
    CommitResult,
    CommitStats,
    Layer,
    LayerKind,
    NoParent,
    NothingToCommitError,
    PartialCommitError,
)
from fs.options import ContentOptions, StatOverride
from sapwood._commit import commit
from sapwood._mount import Mount, MountPointError, mount, serve_mount, unmount
from sapwood._worktree import checkout, diff_directory
from store import (
    ANY,
    I64_MAX,
    I64_MIN,
    U32_MAX,
    AmbiguousRevError,
    AnyTarget,
    Change,
    Commit,
    CorruptObjectError,
    DirEntry,
    DirMeta,
    DirTree,
    ExpectedRef,
    FileHeader,
    FileStat,
    FormatError,
    FsckReport,
    IndexDamagedError,
    InvalidNameError,
    InvalidRefNameError,
    ModePolicyError,
    MountError,
    Node,
    NoSuchAttributeError,
    NotADirectoryInTreeError,
    ObjectId,
    ObjectMissingError,
    ObjectReadError,
    ObjectType,
    OutOfSpaceError,
    PathNotFoundError,
    PermissionDeniedError,
    Problem,
    PruneReport,
    ReadOnlyRepositoryError,
    RebuildReport,
    RefConflictError,
    RefExistsError,
    RefNotFoundError,
    RefTargetError,
    RepoExistsError,
    RepoMode,
    RepoNotFoundError,
    Repository,
    SapwoodError,
    Snapshot,
    SourceError,
    TooManyFilesError,
    UnsafeToPruneError,
    UnsupportedFileTypeError,
    UsageError,
    check_ref_name,
    children,
    diff_trees,
    from_hex,
    fsck,
    history,
    lookup,
    prune,
    rebuild_index,
    rev_parse,
    root_node,
    show_path,
    to_hex,
    walk,
)

__all__ = [
    "ANY",
    "I64_MAX",
    "I64_MIN",
    "NO_PARENT",
    "U32_MAX",
    "AmbiguousRevError",
    "AnyTarget",
    "Change",
    "CheckoutConflictError",
    "CheckoutError",
    "CheckoutOptions",
    "CheckoutStats",
    "Commit",
    "CommitResult",
    "CommitStats",
    "ContentOptions",
    "CorruptObjectError",
    "DirEntry",
    "DirMeta",
    "DirTree",
    "ExpectedRef",
    "FileHeader",
    "FileStat",
    "FormatError",
    "FsckReport",
    "IndexDamagedError",
    "InvalidNameError",
    "InvalidRefNameError",
    "Layer",
    "LayerKind",
    "ModePolicyError",
    "Mount",
    "MountError",
    "MountPointError",
    "NoParent",
    "NoSuchAttributeError",
    "Node",
    "NotADirectoryInTreeError",
    "NothingToCommitError",
    "ObjectId",
    "ObjectMissingError",
    "ObjectReadError",
    "ObjectType",
    "OutOfSpaceError",
    "PartialCommitError",
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
    "StatOverride",
    "SubpathNotADirectoryError",
    "TooManyFilesError",
    "Union",
    "UnsafeToPruneError",
    "UnsupportedFileTypeError",
    "UsageError",
    "check_ref_name",
    "checkout",
    "children",
    "commit",
    "diff_directory",
    "diff_trees",
    "from_hex",
    "fsck",
    "history",
    "lookup",
    "mount",
    "prune",
    "rebuild_index",
    "rev_parse",
    "root_node",
    "serve_mount",
    "show_path",
    "to_hex",
    "unmount",
    "walk",
]
