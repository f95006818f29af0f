"""Making a commit from layers: directories, tar archives and existing commits.

This is what ``sapwood.commit`` and ``sapwood commit`` run. The ref moves by
compare-and-swap against the value it had when the commit began, so two commits
racing on one branch never lose one another's history silently: the later one fails
and changes nothing.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fs.options import ContentOptions
from fs.scan import DirScanner, Progress
from store import (
    Commit,
    DirEntry,
    DirMeta,
    FormatError,
    MutableDir,
    ObjectId,
    ObjectMissingError,
    Repository,
    SourceError,
    Transaction,
    UsageError,
    check_ref_name,
    rev_parse,
)

log = logging.getLogger(__name__)
DEFAULT_DIR_MODE = 0o40755


class LayerKind(enum.StrEnum):
    """What a :class:`Layer` reads: a directory, a tar archive, or an existing commit."""

    DIR = "dir"
    TAR = "tar"
    REF = "ref"


class NoParent(enum.Enum):
    """The type of :data:`NO_PARENT`: a commit that starts a new history."""

    NO_PARENT = "no parent"


NO_PARENT = NoParent.NO_PARENT
"""As a commit's ``parent``: make a root commit, whatever the branch held before."""


@dataclass(frozen=True)
class Layer:
    """One layer of a commit's tree; layers are overlaid in order, later ones winning.

    Build them with :meth:`directory`, :meth:`tar` or :meth:`commit`. ``source`` is the
    path of a DIR or TAR layer, or the revision (a ref, id or prefix, REV^ ...) of a
    REF layer.
    """

    kind: LayerKind
    source: Path | str

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", LayerKind(self.kind))  # "dir" is LayerKind.DIR
        if self.kind is not LayerKind.REF and "\0" in str(self.source):
            raise SourceError(f"{str(self.source)!r}: no path holds NUL")

    @classmethod
    def directory(cls, path: Path | str) -> Layer:
        """A directory, scanned (regular files, symlinks and directories only)."""
        return cls(LayerKind.DIR, Path(path))

    @classmethod
    def tar(cls, path: Path | str) -> Layer:
        """A tar archive (optionally gzip, bzip2, xz or zstd compressed), never unpacked."""
        return cls(LayerKind.TAR, Path(path))

    @classmethod
    def commit(cls, rev: str) -> Layer:
        """The tree of an existing commit of the repository, named by ``rev``."""
        return cls(LayerKind.REF, rev)


class NothingToCommitError(UsageError):
    """A commit was asked for with no layer at all."""


class PartialCommitError(ObjectMissingError):
    """A REF layer names a commit that is partial: objects it needs were deleted (by
    fsck with delete), so its trees cannot be reused until it is committed again."""

    def __init__(self, message: str = "", *, rev: str = "", commit_id: ObjectId | None = None):
        super().__init__(message or f"{rev}: commit is partial", object_id=commit_id)
        self.rev = rev
        self.commit_id = commit_id


@dataclass
class CommitRequest:
    """Everything a commit is made of; :func:`make_commit` makes it."""

    branch: str
    layers: Sequence[Layer]
    subject: str = ""
    body: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    parent: ObjectId | NoParent | None = None  # None: the branch's head
    timestamp: int | None = None
    skip_if_unchanged: bool = False
    options: ContentOptions = field(default_factory=ContentOptions)
    # read every file, vouched for by no stat cache (fs/statcache.py: after a crash, a
    # file written in place may keep its old timestamps); the cache is written afresh
    read_all: bool = False


@dataclass
class CommitStats:
    """What a commit cost: how many files were read, how many the stat cache spared,
    and how many were the repository's own objects (a hardlinked checkout's files,
    recognised by inode and never read)."""

    files_read: int = 0  # regular files whose content was read
    cache_hits: int = 0  # regular files the stat cache vouched for
    linked: int = 0  # regular files that were the repository's own objects, not read


@dataclass(frozen=True)
class CommitResult:
    """The commit made (or, when ``created`` is False, the unchanged parent kept)."""

    commit_id: ObjectId
    created: bool  # False when skip_if_unchanged found nothing to commit
    stats: CommitStats


def make_commit(
    repo: Repository, request: CommitRequest, progress: Progress | None = None
) -> CommitResult:
    """Commit the request's layers and move its branch to the new commit.

    ``progress`` is called with the number of files scanned so far.
    """
    check_ref_name(request.branch)
    if not request.layers:
        raise NothingToCommitError("nothing to commit: no layers given")
    started_ns = time.time_ns()
    head = repo.ref(request.branch)
    parent = _parent(repo, request.parent, head)
    timestamp = request.timestamp if request.timestamp is not None else started_ns // 10**9
    _check_commit_fields(request, parent, timestamp)
    stats = CommitStats()
    with repo.transaction() as txn:
        context = _LayerContext(request.options, started_ns, progress, stats, request.read_all)
        root_entry = _write_layers(repo, txn, request.layers, context)
        if request.skip_if_unchanged and parent is not None:
            previous = repo.read_commit(parent)
            if (previous.tree, previous.meta) == (root_entry.tree, root_entry.meta):
                txn.abort()
                return CommitResult(parent, created=False, stats=stats)
        commit_id = txn.write_commit(_commit_of(request, root_entry, parent, timestamp))
        txn.set_ref(request.branch, commit_id, expected=head)
    log.info("committed %s as %s", request.branch, commit_id.hex())
    return CommitResult(commit_id, created=True, stats=stats)


def _write_layers(
    repo: Repository, txn: Transaction, layers: Sequence[Layer], context: _LayerContext
) -> DirEntry:
    """The layers applied in turn to one tree, written; its root's entry. The last
    layer may write each directory as it finishes it (``seal``, fs/scan.py)."""
    root = MutableDir()
    default_meta = txn.write_dirmeta(DirMeta(0, 0, DEFAULT_DIR_MODE))
    for number, layer in enumerate(layers, 1):
        last = number == len(layers)
        _apply_layer(repo, txn, layer, root, context, default_meta if last else None)
    return root.write(txn, default_meta)


def _commit_of(
    request: CommitRequest, root: DirEntry, parent: ObjectId | None, timestamp: int
) -> Commit:
    return Commit(
        tree=root.tree,
        meta=root.meta,
        parent=parent,
        timestamp=timestamp,
        subject=request.subject,
        body=request.body,
        metadata=tuple(sorted(request.metadata.items())),
    )


def _check_commit_fields(request: CommitRequest, parent: ObjectId | None, timestamp: int) -> None:
    """Refuse a subject, body, metadata or time the commit cannot hold before any file
    of the tree is read, not after."""
    placeholder = ObjectId(bytes(32))
    try:
        Commit(
            tree=placeholder,
            meta=placeholder,
            parent=parent,
            timestamp=timestamp,
            subject=request.subject,
            body=request.body,
            metadata=tuple(sorted(request.metadata.items())),
        )
    except FormatError as exc:
        raise UsageError(str(exc)) from None


def _parent(
    repo: Repository, parent: ObjectId | NoParent | None, head: ObjectId | None
) -> ObjectId | None:
    if parent is None:
        return head
    if parent is NO_PARENT:
        return None
    repo.read_commit(parent)  # a commit of this repository, or ObjectMissingError now
    return parent


@dataclass(frozen=True)
class _LayerContext:
    options: ContentOptions
    started_ns: int
    progress: Progress | None
    stats: CommitStats
    read_all: bool = False


def _apply_layer(
    repo: Repository,
    txn: Transaction,
    layer: Layer,
    root: MutableDir,
    context: _LayerContext,
    seal: ObjectId | None,
) -> None:
    """Overlay one layer on ``root``. ``seal`` (the last layer's default dirmeta) lets a
    directory layer write each directory as it finishes it (fs/scan.py)."""
    if layer.kind is LayerKind.DIR:
        scanner = DirScanner(
            repo,
            txn,
            context.options,
            context.started_ns,
            context.progress,
            seal=seal,
            read_all=context.read_all,
        )
        scanner.scan(Path(layer.source), root)
        stats = context.stats
        stats.files_read += scanner.files_read
        stats.cache_hits += scanner.cache_hits
        stats.linked += scanner.linked
    elif layer.kind is LayerKind.TAR:
        # imported here: tarfile and the decompressors, which a directory never needs
        from fs.tarlayer import TarImporter

        TarImporter(txn, context.options).load(Path(layer.source), root)
    else:
        rev = str(layer.source)
        source_id = rev_parse(repo, rev)
        if repo.is_partial(source_id):  # its trees would be reused without their files
            raise PartialCommitError(
                f"{rev}: commit {source_id.hex()} is partial (objects it needs were "
                "deleted); commit its tree again to repair it",
                rev=rev,
                commit_id=source_id,
            )
        source = repo.read_commit(source_id)
        root.overlay(MutableDir.from_existing(repo, DirEntry(source.tree, source.meta)))
