"""Making a commit from layers: directories, tar archives and existing commits.

This is what ``sapwood commit`` runs. The ref moves by compare-and-swap against the
value it had when the commit began, so two commits racing on one branch never lose
one another's history silently: the later one fails and changes nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fs.options import ContentOptions
from fs.scan import DirScanner, Progress
from fs.tarlayer import TarImporter
from store import (
    Commit,
    DirEntry,
    DirMeta,
    FormatError,
    MutableDir,
    ObjectId,
    ObjectMissingError,
    Repository,
    Transaction,
    UsageError,
    check_ref_name,
    rev_parse,
)

log = logging.getLogger(__name__)
LayerKind = Literal["dir", "tar", "ref"]
DEFAULT_DIR_MODE = 0o40755


@dataclass(frozen=True)
class Layer:
    kind: LayerKind
    source: str

    @classmethod
    def parse(cls, spec: str) -> Layer:
        """``dir=PATH``, ``tar=PATH`` or ``ref=REV`` as in --tree."""
        kind, sep, source = spec.partition("=")
        if not sep or kind not in ("dir", "tar", "ref") or not source:
            raise UsageError(f"--tree={spec}: expected dir=PATH, tar=PATH or ref=REV")
        return cls(kind, source)  # type: ignore[arg-type]


@dataclass
class CommitRequest:
    branch: str
    layers: list[Layer]
    subject: str = ""
    body: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    parent: str | None = None  # a REV, "none", or None for the branch's head
    timestamp: int | None = None
    skip_if_unchanged: bool = False
    options: ContentOptions = field(default_factory=ContentOptions)


@dataclass
class CommitStats:
    files_read: int = 0  # regular files whose content was read
    cache_hits: int = 0  # regular files the stat cache vouched for


@dataclass(frozen=True)
class CommitResult:
    commit_id: ObjectId
    created: bool  # False when --skip-if-unchanged found nothing to commit
    stats: CommitStats


def make_commit(
    repo: Repository, request: CommitRequest, progress: Progress | None = None
) -> CommitResult:
    check_ref_name(request.branch)
    if not request.layers:
        raise UsageError("nothing to commit: give a PATH or --tree=dir=|tar=|ref=")
    started_ns = time.time_ns()
    head = repo.refs().get(request.branch)
    parent = _parent(repo, request.parent, head)
    timestamp = request.timestamp if request.timestamp is not None else started_ns // 10**9
    _check_commit_fields(request, parent, timestamp)
    stats = CommitStats()
    with repo.transaction() as txn:
        root = MutableDir()
        for layer in request.layers:
            _apply_layer(repo, txn, layer, root, request.options, started_ns, progress, stats)
        default_meta = txn.write_dirmeta(DirMeta(0, 0, DEFAULT_DIR_MODE))
        root_entry = root.write(txn, default_meta)
        if request.skip_if_unchanged and parent is not None:
            previous = repo.read_commit(parent)
            if (previous.tree, previous.meta) == (root_entry.tree, root_entry.meta):
                txn.abort()
                return CommitResult(parent, created=False, stats=stats)
        commit = Commit(
            tree=root_entry.tree,
            meta=root_entry.meta,
            parent=parent,
            timestamp=timestamp,
            subject=request.subject,
            body=request.body,
            metadata=tuple(sorted(request.metadata.items())),
        )
        commit_id = txn.write_commit(commit)
        txn.set_ref(request.branch, commit_id, expected=head)
    log.info("committed %s as %s", request.branch, commit_id.hex())
    return CommitResult(commit_id, created=True, stats=stats)


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


def _parent(repo: Repository, parent: str | None, head: ObjectId | None) -> ObjectId | None:
    if parent is None:
        return head
    if parent == "none":
        return None
    return rev_parse(repo, parent)


def _apply_layer(
    repo: Repository,
    txn: Transaction,
    layer: Layer,
    root: MutableDir,
    options: ContentOptions,
    started_ns: int,
    progress: Progress | None,
    stats: CommitStats,
) -> None:
    if layer.kind == "dir":
        scanner = DirScanner(repo, txn, options, started_ns, progress)
        scanner.scan(Path(layer.source), root)
        stats.files_read += scanner.files_read
        stats.cache_hits += scanner.cache_hits
    elif layer.kind == "tar":
        TarImporter(txn, options).load(Path(layer.source), root)
    else:
        source_id = rev_parse(repo, layer.source)
        if repo.is_partial(source_id):  # its trees would be reused without their files
            raise ObjectMissingError(
                f"--tree=ref={layer.source}: commit {source_id.hex()} is partial (fsck "
                "--delete removed objects it needs); commit its tree again to repair it"
            )
        source = repo.read_commit(source_id)
        root.overlay(MutableDir.from_existing(repo, DirEntry(source.tree, source.meta)))
