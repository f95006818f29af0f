"""prune: delete what no root needs. The same code serves servers and clients.

Roots are every commit (OSTree's default) or, with ``refs_only``, the refs' heads
and their history up to ``depth`` parents. ``keep_younger_than`` drops older
commits from the roots (never a ref's head); ``delete_commits`` drops named ones.
Everything the remaining roots do not reach goes, and so do object files the
index does not list (left by interrupted transactions).

Prune holds the repository lock exclusively, so it never removes what a running
commit or pull is writing (they hold it shared). It removes index entries first and
files after: a crash in between leaves only unlisted files, which the next prune
removes. The file objects leave in batches of whole objects/XX directories, an LMDB
transaction each, then their files go, directory by directory in inode order; the
metadata objects (commits, trees) leave in the first of those transactions, and the
stat cache's stale rows in the last when the cache is small. A tree is never left in
the index without what it names (so a later commit or pull can trust a tree it finds
there), memory stays bounded (the garbage files of a million-file commit are never
listed all at once), and a small prune commits the index once (session 11: it was
once a directory holding garbage, then once more for the stat cache).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from store.delta_work import remove_leftovers
from store.diskorder import inode_numbers
from store.errors import CommitIsHeadError, RefNotFoundError, UnsafeToPruneError
from store.ids import ObjectId, ObjectType
from store.index import IndexReader, WriteBatch
from store.progress import TaskCallback, Ticker, counted
from store.reachability import Reachable, commit_history, commits_needing, walk_commits
from store.repo import Repository
from store.statcache import record_file_id
from store.summary import DELTAS_DIR
from store.transaction import commitmeta_relpath
from store.unlisted import tell_if_waiting, unlisted_files

log = logging.getLogger(__name__)
_CHUNK = 1024  # files measured or deleted between two progress counts
_ROWS_AT_ONCE = 16384  # index rows counted between page releases; stat-cache rows per sweep;
# garbage file objects leaving the index in one transaction (whole directories)
_FILE = ObjectType.FILE


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
    tell_if_waiting(repo, progress)
    with repo.lock(exclusive=True):
        with repo.index.reader() as reader:
            roots = _roots(reader, refs_only, depth, keep_younger_than, delete_commits)
            garbage = _find_garbage(repo, reader, roots, progress)
        report = garbage.report(dry_run)
        report.bytes_freed = _remove(repo, garbage, dry_run, progress)
    if not dry_run:
        remove_leftovers(repo.path / DELTAS_DIR)  # a killed static-delta generate's parts
        log.info(
            "pruned %d objects (%d commits), %d bytes",
            report.objects,
            len(report.commits),
            report.bytes_freed,
        )
    return report


def _find_garbage(
    repo: Repository, reader: IndexReader, roots: set[ObjectId], progress: TaskCallback | None
) -> _Garbage:
    """What ``roots`` do not need, once it is sure that nothing they need went unread."""
    ordered = counted(progress, "reading trees", sorted(roots), "commit")
    reachable = walk_commits(reader, ordered, verify=True, release=repo.index.release_pages)
    _require_sound(reader, reachable, roots)
    garbage = _Garbage(repo, reachable)
    garbage.count(reader)
    garbage.orphans = unlisted_files(repo, reader, progress)
    return garbage


def _remove(
    repo: Repository, garbage: _Garbage, dry_run: bool, progress: TaskCallback | None
) -> int:
    """Remove the garbage (index first, then files: trees before the files they name);
    the bytes freed. ``dry_run`` only measures."""
    meta_paths = garbage.metadata_paths()
    doomed = len(meta_paths) + len(garbage.orphans) + garbage.files
    ticker = Ticker(progress, "measuring" if dry_run else "deleting", doomed, "file")
    if not dry_run and garbage.files:
        _SweepMark(repo).set()  # before any file object leaves the index
    freed = sum(_measure_then_remove(p, ticker, dry_run) for p in garbage.file_paths(dry_run))
    freed += _measure_then_remove([*meta_paths, *garbage.orphans], ticker, dry_run)
    ticker.finish()
    if not dry_run:
        _sweep_if_due(repo, removed_files=garbage.files > 0)
    return freed


def _sweep_if_due(repo: Repository, removed_files: bool) -> None:
    """Drop stale stat-cache rows if file objects left the index, now or in a prune
    killed before its sweep."""
    sweep = _SweepMark(repo)
    if removed_files or sweep.is_set():
        _drop_stale_cache(repo)
        sweep.clear()


class _Garbage:
    """What no root needs: the metadata objects, held (a few per directory), and the
    file objects, only counted, then read again from the index in batches."""

    def __init__(self, repo: Repository, reachable: Reachable) -> None:
        self._repo = repo
        self._reachable = reachable
        self.metadata: dict[ObjectId, ObjectType] = {}
        self.files = 0
        self.total = 0
        self.orphans: list[Path] = []  # object files the index does not list
        self._rows_read = 0  # by file_paths, for the page releases

    def report(self, dry_run: bool) -> PruneReport:
        """The report of removing this garbage (its bytes freed still to be added)."""
        commits = sorted(o for o, k in self.metadata.items() if k is ObjectType.COMMIT)
        return PruneReport(
            total_objects=self.total,
            commits=commits,
            objects=len(self.metadata) + self.files,
            orphan_files=len(self.orphans),
            dry_run=dry_run,
        )

    def metadata_paths(self) -> list[Path]:
        """The files of the garbage metadata objects (archive mode's, commitmeta)."""
        return [p for o, k in self.metadata.items() for p in _object_paths(self._repo, o, k)]

    def count(self, reader: IndexReader) -> None:
        for object_id, kind in reader.iter_kinds():
            self.total += 1
            if self.total % _ROWS_AT_ONCE == 0:
                self._repo.index.release_pages()
            if self._reachable.needs(object_id):
                continue
            if kind is ObjectType.FILE:
                self.files += 1
            else:
                self.metadata[object_id] = kind

    def file_paths(self, dry_run: bool) -> Iterator[list[Path]]:
        """The garbage file objects' paths, one objects/XX directory at a time, in the
        order of their inodes (on ext4 and the like, stat and unlink then read the
        inode table in order, not at random: the deletion was disk-bound).

        Unless ``dry_run``, the objects leave the index before their paths are given
        out, in batches of whole directories (their ids are neighbours there too) of
        at least _ROWS_AT_ONCE objects or the rest: one LMDB transaction, one sync of
        the index, each. The first also takes the garbage metadata objects, which so
        leave the index no later than any file they name. A transaction a directory
        was 256 syncs for any repository of a few hundred files (half of a small
        prune's time), and a tiny one paid one per directory holding garbage."""
        first: int | None = 0
        metadata = set(self.metadata)
        while first is not None:
            with self._repo.index.reader() as reader:
                directories, first = self._next_batch(reader, first)
            batch = {object_id for directory in directories for object_id in directory}
            if (batch or metadata) and not dry_run:
                stale = self._stale_cache_rows(batch) if first is None and batch else set()
                self._repo.index.apply(
                    WriteBatch(remove_objects=batch | metadata, statcache_remove=stale)
                )
            metadata = set()
            for directory in directories:
                paths = [p for o in directory for p in _object_paths(self._repo, o, _FILE)]
                yield _in_inode_order(paths)

    def _stale_cache_rows(self, leaving: set[ObjectId]) -> set[bytes]:
        """The stat cache's rows that vouch for a file object the index does not list,
        or will not once ``leaving`` has left it: dropped in the last removal's own
        transaction, so that the sweep after it (_sweep_if_due, still run: it is what
        clears the mark) finds nothing to write, one sync fewer. Only for a cache of at
        most _ROWS_AT_ONCE rows (none else: the sweep takes a larger one in batches)."""
        stale: set[bytes] = set()
        with self._repo.index.reader() as reader:
            for count, (key, raw) in enumerate(reader.iter_statcache(), 1):
                if count > _ROWS_AT_ONCE:
                    return set()
                file_id = record_file_id(raw)
                if file_id in leaving or not reader.has_object(file_id):
                    stale.add(key)
        return stale

    def _next_batch(
        self, reader: IndexReader, first: int
    ) -> tuple[list[list[ObjectId]], int | None]:
        """The garbage file objects of the directories from ``first`` on, directory by
        directory, until _ROWS_AT_ONCE or more are found; and the directory to go on
        from (None: all read). The index's pages are let go of every _ROWS_AT_ONCE
        rows read (the live objects' rows, read but not kept, count too)."""
        found: list[list[ObjectId]] = []
        doomed = 0
        for object_id, kind in reader.iter_kinds(bytes([first])):
            self._rows_read += 1
            if self._rows_read % _ROWS_AT_ONCE == 0:
                self._repo.index.release_pages()
            if object_id[0] != first:
                if doomed >= _ROWS_AT_ONCE:
                    return found, object_id[0]
                first = object_id[0]
            if kind is ObjectType.FILE and not self._reachable.needs(object_id):
                if not found or found[-1][0][0] != first:
                    found.append([])
                found[-1].append(object_id)
                doomed += 1
        return found, None


def _in_inode_order(paths: list[Path]) -> list[Path]:
    """``paths`` (of one directory) sorted by inode number (store/diskorder.py)."""
    if len(paths) < 2:
        return paths
    inodes = inode_numbers(paths[0].parent)
    return sorted(paths, key=lambda path: inodes.get(path.name.partition(".")[0], 0))


class _SweepMark:
    """REPO/tmp/prune-sweep-pending: a prune removed file objects from the index and has
    not yet dropped the stat cache's rows that vouch for them. Those rows are harmless
    (a lookup checks the index) but only a prune drops them, and the prune after a
    killed one may find no garbage file to trigger the sweep: the mark does."""

    def __init__(self, repo: Repository) -> None:
        self._path = repo.path / "tmp" / "prune-sweep-pending"

    def set(self) -> None:
        self._path.parent.mkdir(mode=0o700, exist_ok=True)
        self._path.touch()

    def is_set(self) -> bool:
        return self._path.exists()

    def clear(self) -> None:
        self._path.unlink(missing_ok=True)


def _drop_stale_cache(repo: Repository) -> None:
    """Drop the stat cache's rows that vouch for file objects no longer indexed, a batch
    at a time (a row names its object by id only)."""
    after = b""
    while True:
        stale: set[bytes] = set()
        scanned = 0
        with repo.index.reader() as reader:
            for key, raw in reader.iter_statcache(after):
                after, scanned = key, scanned + 1
                if not reader.has_object(record_file_id(raw)):
                    stale.add(key)
                if scanned == _ROWS_AT_ONCE:
                    break
        if stale:
            repo.index.apply(WriteBatch(statcache_remove=stale))
        repo.index.release_pages()
        if scanned < _ROWS_AT_ONCE:
            return


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


def _measure_then_remove(paths: list[Path], ticker: Ticker, dry_run: bool) -> int:
    """The bytes ``paths`` occupy; unless ``dry_run``, unlinked once measured."""
    total = 0
    for start in range(0, len(paths), _CHUNK):
        for path in paths[start : start + _CHUNK]:
            total += _size(path)
            if not dry_run:
                path.unlink(missing_ok=True)
        ticker.add(min(_CHUNK, len(paths) - start))
    return total


def _size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except FileNotFoundError:
        return 0
