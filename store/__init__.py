"""sapwood's repository layer: objects, index, transactions, refs and history.

This is the public API that fs/ and mountd/ use; they import nothing else of store.
"""

# Names load on first use (`import store` is what every `import store.x` pays first).
# To add a public name: import it in the `if TYPE_CHECKING:` block, add
# "name": "store.module" to _HOMES and "name" to __all__ (tests/test_startup.py checks
# that the three agree).

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from store.content import read_xattrs, user_checkout_mode, user_object_mode
    from store.deltas import (
        DeltaEntry,
        Superblock,
        decode_superblock,
        encode_superblock,
        generate_delta,
        iter_delta_objects,
    )
    from store.durability import space_errors, syncfs
    from store.errors import (
        AmbiguousRevError,
        BootedDeploymentError,
        CommitIsHeadError,
        CorruptObjectError,
        DeploymentIndexError,
        DowngradeError,
        EtcMergeConflictError,
        FormatError,
        IndexDamagedError,
        InitramfsTreeError,
        InvalidNameError,
        InvalidRefNameError,
        KeyFileError,
        ModePolicyError,
        MountError,
        NetworkError,
        NoSuchAttributeError,
        NotADirectoryInTreeError,
        ObjectMissingError,
        ObjectReadError,
        OutOfSpaceError,
        PathNotFoundError,
        PermissionDeniedError,
        ReadOnlyRepositoryError,
        RefConflictError,
        RefExistsError,
        RefNotFoundError,
        RefTargetError,
        RemoteError,
        RepoExistsError,
        RepoNotFoundError,
        SapwoodError,
        SignatureError,
        SignedDowngradeError,
        SourceError,
        SysrootError,
        SysrootNotFoundError,
        TooManyFilesError,
        TreeLayoutError,
        UnknownOSError,
        UnsafeToPruneError,
        UnsupportedFileTypeError,
        UsageError,
    )
    from store.filez import DecodedFile, decode_filez, decode_metadata, encode_filez
    from store.fsck import FsckReport, Problem, fsck
    from store.ids import ObjectId, ObjectType, from_hex, to_hex
    from store.index import ANY, AnyTarget, ExpectedRef
    from store.inodes import LinkedObject, still_linked
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
    from store.pathlog import PathChange, PathLogEntry, path_history
    from store.prune import PruneReport, prune
    from store.rebuild import RebuildReport, rebuild_index
    from store.repo import Repository
    from store.revs import history, rev_parse
    from store.signing import (
        KeyPair,
        Signature,
        commit_signatures,
        decode_signatures,
        encode_signatures,
        generate_keypair,
        parse_public_key,
        read_keys_file,
        sign_commit,
        verify_signed,
        write_keys_file,
    )
    from store.snapshot import Snapshot
    from store.statcache import StatCacheRecord
    from store.summary import (
        Summary,
        decode_summary,
        delta_name,
        encode_summary,
        list_deltas,
        read_summary,
        update_summary,
    )
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
    from store.verify import (
        ContentCheck,
        check_content,
        file_matches,
        open_regular,
        require_content,
    )

__all__ = [
    "ANY",
    "I64_MAX",
    "I64_MIN",
    "MAX_SYMLINK_TARGET",
    "MAX_TREE_DEPTH",
    "SMALL_FILE",
    "U32_MAX",
    "AmbiguousRevError",
    "AnyTarget",
    "BootedDeploymentError",
    "Change",
    "Commit",
    "CommitIsHeadError",
    "ContentCheck",
    "CorruptObjectError",
    "DecodedFile",
    "DeltaEntry",
    "DeploymentIndexError",
    "DirEntry",
    "DirMeta",
    "DirTree",
    "DowngradeError",
    "EtcMergeConflictError",
    "ExpectedRef",
    "FileHeader",
    "FileStat",
    "FormatError",
    "FsckReport",
    "IndexDamagedError",
    "InitramfsTreeError",
    "InvalidNameError",
    "InvalidRefNameError",
    "KeyFileError",
    "KeyPair",
    "LinkedObject",
    "ModePolicyError",
    "MountError",
    "MutableDir",
    "NetworkError",
    "NoSuchAttributeError",
    "Node",
    "NotADirectoryInTreeError",
    "ObjectId",
    "ObjectMissingError",
    "ObjectReadError",
    "ObjectType",
    "OutOfSpaceError",
    "PathChange",
    "PathLogEntry",
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
    "RemoteError",
    "RepoExistsError",
    "RepoMode",
    "RepoNotFoundError",
    "Repository",
    "SapwoodError",
    "Signature",
    "SignatureError",
    "SignedDowngradeError",
    "Snapshot",
    "SourceError",
    "StatCacheRecord",
    "Summary",
    "Superblock",
    "SysrootError",
    "SysrootNotFoundError",
    "TooManyFilesError",
    "Transaction",
    "TreeLayoutError",
    "UnknownOSError",
    "UnsafeToPruneError",
    "UnsupportedFileTypeError",
    "UsageError",
    "check_content",
    "check_name",
    "check_ref_name",
    "children",
    "commit_signatures",
    "decode_filez",
    "decode_metadata",
    "decode_signatures",
    "decode_summary",
    "decode_superblock",
    "delta_name",
    "diff_trees",
    "encode_filez",
    "encode_signatures",
    "encode_summary",
    "encode_superblock",
    "file_matches",
    "find_child",
    "from_hex",
    "fsck",
    "generate_delta",
    "generate_keypair",
    "history",
    "iter_delta_objects",
    "list_deltas",
    "locate_child",
    "lookup",
    "open_regular",
    "parse_public_key",
    "path_history",
    "prune",
    "read_keys_file",
    "read_summary",
    "read_xattrs",
    "rebuild_index",
    "require_content",
    "rev_parse",
    "root_node",
    "show_path",
    "sign_commit",
    "space_errors",
    "split_path",
    "still_linked",
    "syncfs",
    "to_hex",
    "update_summary",
    "user_checkout_mode",
    "user_object_mode",
    "verify_signed",
    "walk",
    "write_keys_file",
]

# Each public name -> the module that defines it, imported when the name is first used.
_HOMES: dict[str, str] = {
    "read_xattrs": "store.content",
    "user_checkout_mode": "store.content",
    "user_object_mode": "store.content",
    "DeltaEntry": "store.deltas",
    "Superblock": "store.deltas",
    "decode_superblock": "store.deltas",
    "encode_superblock": "store.deltas",
    "generate_delta": "store.deltas",
    "iter_delta_objects": "store.deltas",
    "space_errors": "store.durability",
    "syncfs": "store.durability",
    "AmbiguousRevError": "store.errors",
    "BootedDeploymentError": "store.errors",
    "CommitIsHeadError": "store.errors",
    "CorruptObjectError": "store.errors",
    "DeploymentIndexError": "store.errors",
    "DowngradeError": "store.errors",
    "EtcMergeConflictError": "store.errors",
    "FormatError": "store.errors",
    "IndexDamagedError": "store.errors",
    "InitramfsTreeError": "store.errors",
    "InvalidNameError": "store.errors",
    "InvalidRefNameError": "store.errors",
    "KeyFileError": "store.errors",
    "ModePolicyError": "store.errors",
    "MountError": "store.errors",
    "NetworkError": "store.errors",
    "NoSuchAttributeError": "store.errors",
    "NotADirectoryInTreeError": "store.errors",
    "ObjectMissingError": "store.errors",
    "ObjectReadError": "store.errors",
    "OutOfSpaceError": "store.errors",
    "PathNotFoundError": "store.errors",
    "PermissionDeniedError": "store.errors",
    "ReadOnlyRepositoryError": "store.errors",
    "RefConflictError": "store.errors",
    "RefExistsError": "store.errors",
    "RefNotFoundError": "store.errors",
    "RefTargetError": "store.errors",
    "RemoteError": "store.errors",
    "RepoExistsError": "store.errors",
    "RepoNotFoundError": "store.errors",
    "SapwoodError": "store.errors",
    "SignatureError": "store.errors",
    "SignedDowngradeError": "store.errors",
    "SourceError": "store.errors",
    "SysrootError": "store.errors",
    "SysrootNotFoundError": "store.errors",
    "TooManyFilesError": "store.errors",
    "TreeLayoutError": "store.errors",
    "UnknownOSError": "store.errors",
    "UnsafeToPruneError": "store.errors",
    "UnsupportedFileTypeError": "store.errors",
    "UsageError": "store.errors",
    "DecodedFile": "store.filez",
    "decode_filez": "store.filez",
    "decode_metadata": "store.filez",
    "encode_filez": "store.filez",
    "FsckReport": "store.fsck",
    "Problem": "store.fsck",
    "fsck": "store.fsck",
    "ObjectId": "store.ids",
    "ObjectType": "store.ids",
    "from_hex": "store.ids",
    "to_hex": "store.ids",
    "ANY": "store.index",
    "AnyTarget": "store.index",
    "ExpectedRef": "store.index",
    "LinkedObject": "store.inodes",
    "still_linked": "store.inodes",
    "RepoMode": "store.modes",
    "MAX_TREE_DEPTH": "store.mtree",
    "MutableDir": "store.mtree",
    "check_name": "store.names",
    "check_ref_name": "store.names",
    "show_path": "store.names",
    "split_path": "store.names",
    "Commit": "store.objects",
    "DirEntry": "store.objects",
    "DirMeta": "store.objects",
    "DirTree": "store.objects",
    "FileHeader": "store.objects",
    "FileStat": "store.objects",
    "I64_MAX": "store.objects",
    "I64_MIN": "store.objects",
    "MAX_SYMLINK_TARGET": "store.objects",
    "U32_MAX": "store.objects",
    "PruneReport": "store.prune",
    "prune": "store.prune",
    "RebuildReport": "store.rebuild",
    "rebuild_index": "store.rebuild",
    "Repository": "store.repo",
    "PathChange": "store.pathlog",
    "PathLogEntry": "store.pathlog",
    "path_history": "store.pathlog",
    "history": "store.revs",
    "rev_parse": "store.revs",
    "KeyPair": "store.signing",
    "Signature": "store.signing",
    "commit_signatures": "store.signing",
    "decode_signatures": "store.signing",
    "encode_signatures": "store.signing",
    "generate_keypair": "store.signing",
    "parse_public_key": "store.signing",
    "read_keys_file": "store.signing",
    "sign_commit": "store.signing",
    "verify_signed": "store.signing",
    "write_keys_file": "store.signing",
    "Snapshot": "store.snapshot",
    "StatCacheRecord": "store.statcache",
    "Summary": "store.summary",
    "decode_summary": "store.summary",
    "delta_name": "store.summary",
    "encode_summary": "store.summary",
    "list_deltas": "store.summary",
    "read_summary": "store.summary",
    "update_summary": "store.summary",
    "SMALL_FILE": "store.transaction",
    "Transaction": "store.transaction",
    "Change": "store.trees",
    "Node": "store.trees",
    "children": "store.trees",
    "diff_trees": "store.trees",
    "find_child": "store.trees",
    "locate_child": "store.trees",
    "lookup": "store.trees",
    "root_node": "store.trees",
    "walk": "store.trees",
    "ContentCheck": "store.verify",
    "check_content": "store.verify",
    "file_matches": "store.verify",
    "open_regular": "store.verify",
    "require_content": "store.verify",
}


class _Package(types.ModuleType):
    """store itself, so that a submodule never hides the function it is named after.

    Importing store.fsck binds the attribute ``store.fsck`` to that module; eagerly
    imported, the function ``fsck`` then replaced it. Loaded lazily, the module could
    come second and stay: so a submodule bound under a public name binds that name's
    function instead, and ``from store import fsck`` is the function whatever the order.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, types.ModuleType) and _HOMES.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

if not TYPE_CHECKING:  # mypy sees the imports above; an unknown name stays an error there

    def __getattr__(name: str) -> object:
        """Import a public name's module on first use (PEP 562), then keep the name."""
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})
