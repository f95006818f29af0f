"""prune: delete what no root needs. The same code serves servers and clients.

Roots are every commit (OSTree's default) or, with ``refs_only``, the refs' heads
and their history up to ``depth`` parents. ``keep_younger_than`` drops older
commits from the roots (never a ref's head); ``delete_commits`` drops named ones.
Everything the remaining roots do not reach goes, and so do object files the
index does not list (left by interrupted transactions).

Prune holds the repository lock exclusively, so it never removes what a running
commit or pull is writing (they hold it shared). It removes index entries first,
in one LMDB transaction, and files after: a crash in between leaves only unlisted
files, which the next prune removes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from store.errors import CommitIsHeadError, RefNotFoundError, UnsafeToPruneError
from store.ids import ObjectId, ObjectType
from store.index import IndexReader, WriteBatch
from store.progress import TaskCallback, Ticker, tick
from store.reachability import (
    Reachable,
    commit_history,
    commits_needing,
    orphan_files,
    walk_commits,
)
from store.repo import Repository
from store.statcache import record_file_id
from store.transaction import commitmeta_relpath

log = logging.getLogger(__name__)
_CHUNK = 1024  # files measured or deleted between two progress counts


@dataclass
class PruneReport:
    """What prune deleted (or, with ``dry_run``, would delete)."""

    total_objects: int = 0
    commits: list[ObjectId] = field(default_factory=list)  # commits removed
    objects: int = 0  # objects removed, commits included
    orphan_files: int = 0
    bytes_freed: int = 0
    dry_run: bool = False


def prune(
    repo: Repository,
    refs_only: bool = False,
    depth: int = -1,
    keep_younger_than: int | None = None,
    delete_commits: tuple[ObjectId, ...] = (),
    dry_run: bool = False,
    progress: TaskCallback | None = None,
) -> PruneReport:
    """Delete the objects that no root commit needs. The roots are every commit, or with
    ``refs_only`` the refs' histories (``depth`` parents each; -1: all); less commits
    older than ``keep_younger_than`` (never a ref's head) and ``delete_commits``.
    Takes the repository lock exclusively; ``dry_run`` deletes nothing. ``progress`` is
    told of the walk of the trees, then of the files measured and deleted, of how many."""
    with repo.lock(exclusive=True):
        with repo.index.reader() as reader:
            roots = _roots(reader, refs_only, depth, keep_younger_than, delete_commits)
            tick(progress, "reading trees")
            reachable = walk_commits(reader, roots, verify=True)
            _require_sound(reader, reachable, roots)
            keep = reachable.commits | reachable.metadata | reachable.files
            garbage = {oid: rec.kind for oid, rec in reader.iter_objects() if oid not in keep}
            orphans = orphan_files(repo.path / "objects", reader)
            stale_cache = {
                key for key, raw in reader.iter_statcache() if record_file_id(raw) in garbage
            }
            report = PruneReport(total_objects=len(keep) + len(garbage), dry_run=dry_run)
        report.commits = sorted(oid for oid, kind in garbage.items() if kind is ObjectType.COMMIT)
        report.objects = len(garbage)
        report.orphan_files = len(orphans)
        paths = [p for oid, kind in garbage.items() for p in _object_paths(repo, oid, kind)]
        doomed = [*paths, *orphans]
        report.bytes_freed = _sizes(doomed, Ticker(progress, "measuring", len(doomed), "file"))
        if dry_run:
            return report
        repo.index.apply(WriteBatch(remove_objects=set(garbage), statcache_remove=stale_cache))
        _unlink(doomed, Ticker(progress, "deleting", len(doomed), "file"))
    log.info(
        "pruned %d objects (%d commits), %d bytes",
        report.objects,
        len(report.commits),
        report.bytes_freed,
    )
    return report


def _require_sound(reader: IndexReader, reachable: Reachable, roots: set[ObjectId]) -> None:
    """Refuse to delete anything unless every metadata object the roots need was read.

    A tree that cannot be read hides what it needs: deleting "everything not seen"
    would delete the files of a commit a ref still names. The one exception is what
    ``fsck --delete`` removed and recorded: a missing object all of whose commits
    are marked partial.
    """
    if not reachable.bad_metadata:
        return
    partial = set(reader.partial_commits())
    needed = commits_needing(reader, roots, set(reachable.bad_metadata))
    for object_id, problem in sorted(reachable.bad_metadata.items()):
        users = needed.get(object_id, [])
        if not reader.has_object(object_id) and users and partial.issuperset(users):
            continue
        shown = f" (needed by commit {users[0].hex()[:12]})" if users else ""
        raise UnsafeToPruneError(
            f"object {object_id.hex()}{shown}: {problem}; prune deleted nothing "
            "(run sapwood fsck, then repair or delete what needs it)"
        )


def _roots(
    reader: IndexReader,
    refs_only: bool,
    depth: int,
    keep_younger_than: int | None,
    delete_commits: tuple[ObjectId, ...],
) -> set[ObjectId]:
    heads = reader.refs()
    head_ids = set(heads.values())
    for commit_id in delete_commits:
        record = reader.object(commit_id)
        if record is None or record.kind is not ObjectType.COMMIT:
            raise RefNotFoundError(f"no commit {commit_id.hex()} to delete", rev=commit_id.hex())
        pointing = sorted(name for name, cid in heads.items() if cid == commit_id)
        if pointing:
            raise CommitIsHeadError(
                f"commit {commit_id.hex()[:12]} is the head of {', '.join(pointing)}; "
                "delete the ref first",
                commit_id=commit_id,
                refs=tuple(pointing),
            )
    if refs_only:
        roots = {cid for head in head_ids for cid in commit_history(reader, head, depth)}
    else:
        roots = {cid for cid, _ in reader.commit_ids()}
    if keep_younger_than is not None:
        times = dict(reader.commit_ids())
        roots = {cid for cid in roots if cid in head_ids or times.get(cid, 0) >= keep_younger_than}
    return roots - set(delete_commits)


def _object_paths(repo: Repository, object_id: ObjectId, kind: ObjectType) -> list[Path]:
    """Files an object occupies: the content file, or an archive's metadata file (and a
    commit's signatures, ``.commitmeta``)."""
    if kind is ObjectType.COMMIT and repo.stores_compressed:
        return [
            Path(repo.object_path(object_id, kind)),
            repo.path / "objects" / commitmeta_relpath(object_id),
        ]
    if kind is ObjectType.FILE or repo.stores_compressed:
        return [Path(repo.object_path(object_id, kind))]
    return []


def _sizes(paths: list[Path], ticker: Ticker) -> int:
    total = 0
    for start in range(0, len(paths), _CHUNK):
        total += sum(_size(p) for p in paths[start : start + _CHUNK])
        ticker.add(min(_CHUNK, len(paths) - start))
    ticker.finish()
    return total


def _unlink(paths: list[Path], ticker: Ticker) -> None:
    for start in range(0, len(paths), _CHUNK):
        for path in paths[start : start + _CHUNK]:
            path.unlink(missing_ok=True)
        ticker.add(min(_CHUNK, len(paths) - start))
    ticker.finish()


def _size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except FileNotFoundError:
        return 0
