"""fsck: re-hash what the refs need (or everything) and check index and files agree.

Metadata objects are checked in the calling process straight from the index's
memory map; file objects are re-hashed in full, on every core (worker processes,
each with its own view of the index), since that is where the time goes.

With ``delete``, corrupt or missing objects are dropped from the index and disk,
and the commits that need them are marked partial, as OSTree does; a later commit
or pull that brings the objects back makes those commits whole again, and the next
fsck clears their mark.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from store.diskorder import inode_numbers
from store.errors import CorruptObjectError, ObjectMissingError
from store.ids import ID_BYTES, ObjectId, ObjectType
from store.index import IndexReader, WriteBatch
from store.progress import TaskCallback, Ticker, counted
from store.reachability import Reachable, commit_history, commits_needing, walk_commits
from store.repo import Repository
from store.unlisted import still_unlisted, tell_if_waiting, unlisted_files
from store.verify import open_object_file

if TYPE_CHECKING:
    from concurrent.futures import Future

log = logging.getLogger(__name__)
_BATCH = 512
_PREFETCH = 128  # objects whose reads are started together
_PARALLEL_ABOVE = 4096  # fewer files than this are checked in-process (no spawn cost)


@dataclass(frozen=True)
class Problem:
    """One damaged or missing object, and the commits that need it."""

    object_id: ObjectId
    message: str
    needed_by: tuple[ObjectId, ...] = ()

    def describe(self) -> str:
        """One line: the object, what is wrong, and the commits that need it."""
        text = f"object {self.object_id.hex()}: {self.message}"
        if self.needed_by:
            shown = ", ".join(c.hex()[:12] for c in self.needed_by[:3])
            more = f" and {len(self.needed_by) - 3} more" if len(self.needed_by) > 3 else ""
            text += f" (needed by commit {shown}{more})"
        return text


@dataclass
class FsckReport:
    """What fsck checked and found; ``problems`` and ``partial`` are empty when sound."""

    commits: int = 0
    metadata_objects: int = 0
    file_objects: int = 0
    problems: list[Problem] = field(default_factory=list)
    partial: list[ObjectId] = field(default_factory=list)  # still partial after this run
    completed: list[ObjectId] = field(default_factory=list)  # partial marks cleared
    deleted: list[ObjectId] = field(default_factory=list)
    orphan_files: int = 0  # object files the index does not list (with all_objects)
    # a commit or pull ran beside fsck: some of those files may be its, just published
    writer_running: bool = False

    @property
    def clean(self) -> bool:
        """Whether fsck found nothing wrong (no problems, no partial commits)."""
        return not self.problems and not self.partial


def fsck(
    repo: Repository,
    all_objects: bool = False,
    delete: bool = False,
    progress: TaskCallback | None = None,
) -> FsckReport:
    """Re-hash and decode what the refs need (every object with ``all_objects``).

    With ``delete``, corrupt objects are removed and the commits that need them marked
    partial (a new commit of the same content repairs them). ``progress`` is told of the
    walk of the trees, then of the file objects re-hashed out of how many (a Ticker's).
    """
    # Held until the last write: a writer that started between the check and the
    # deletion would reuse a corrupt object (a stat cache row, an existing tree naming
    # it) in a commit not marked partial, and a partial mark cleared after another
    # fsck --delete set it again would hide a deleted object.
    if delete:
        tell_if_waiting(repo, progress)
    with repo.lock(exclusive=delete):
        return _fsck_locked(repo, all_objects, delete, progress)


def _fsck_locked(
    repo: Repository, all_objects: bool, delete: bool, progress: TaskCallback | None
) -> FsckReport:
    report = FsckReport()
    with repo.index.reader() as reader:
        reachable = _reachable(repo, reader, all_objects, progress)
        report.commits = len(reachable.commits)
        report.metadata_objects = len(reachable.metadata)
        report.file_objects = len(reachable.files)
        # before the long check, so that the check's count is the last one shown
        unlisted = unlisted_files(repo, reader, progress) if all_objects else []
        bad = _damaged(repo, reader, reachable, progress)
        broken = _judge(reader, report, reachable.commits, bad)
    report.orphan_files, report.writer_running = still_unlisted(repo, unlisted)
    del unlisted
    _write_findings(repo, report, bad, broken, delete)
    return report


def _reachable(
    repo: Repository, reader: IndexReader, all_objects: bool, progress: TaskCallback | None
) -> Reachable:
    """What the refs need (every commit does, with ``all_objects``, and so does every
    file object the index holds); metadata objects re-hashed on the way."""
    roots = counted(progress, "reading trees", _roots(reader, all_objects), "commit")
    reachable = walk_commits(reader, roots, verify=True, release=repo.index.release_pages)
    if all_objects:
        reachable.files.update(
            oid for oid, rec in reader.iter_objects() if rec.kind is ObjectType.FILE
        )
    return reachable


def _damaged(
    repo: Repository, reader: IndexReader, reachable: Reachable, progress: TaskCallback | None
) -> dict[ObjectId, str]:
    """Every object found missing or corrupt, with what is wrong. Empties
    ``reachable.files`` (a million ids are held once, by the sorted list)."""
    files = sorted(reachable.files)  # in index order: each worker reads pages in turn
    reachable.files.clear()
    bad = dict(reachable.bad_metadata)
    ticker = Ticker(progress, "checking", len(files), "file")
    bad.update(_check_files(repo, reader, files, ticker))
    del files
    repo.index.release_pages()
    ticker.finish()
    if repo.content.compressed:
        served = (reachable.commits | reachable.metadata) - bad.keys()
        bad.update(_check_archive_metadata(repo, reader, served))
    return bad


def _judge(
    reader: IndexReader, report: FsckReport, commits: set[ObjectId], bad: dict[ObjectId, str]
) -> set[ObjectId]:
    """Fill in the problems (with the commits needing each), the partial commits and
    those found whole again; return the commits ``bad`` breaks."""
    needed = commits_needing(reader, commits, set(bad)) if bad else {}
    report.problems = [
        Problem(oid, msg, tuple(needed.get(oid, ()))) for oid, msg in sorted(bad.items())
    ]
    broken = {c for users in needed.values() for c in users}
    partial = set(reader.partial_commits())
    report.completed = sorted((partial & commits) - broken)
    report.partial = sorted(partial)
    return broken


def _write_findings(
    repo: Repository,
    report: FsckReport,
    bad: dict[ObjectId, str],
    broken: set[ObjectId],
    delete: bool,
) -> None:
    """Delete the bad objects (with ``delete``) and mark what needs them partial; clear
    the marks of commits found whole."""
    partial = set(report.partial)
    if delete and bad:
        report.deleted = _delete(repo, set(bad), broken)
        partial |= broken
    if report.completed:
        repo.index.apply(WriteBatch(partial_clear=set(report.completed)))
    report.partial = sorted(partial - set(report.completed))


def _roots(reader: IndexReader, all_objects: bool) -> list[ObjectId]:
    if all_objects:
        return [cid for cid, _ in reader.commit_ids()]
    roots: list[ObjectId] = []
    for head in reader.refs().values():
        roots += commit_history(reader, head, depth=-1) or [head]
    return roots


def _check_files(
    repo: Repository,
    reader: IndexReader,
    files: list[ObjectId],
    ticker: Ticker,
) -> dict[ObjectId, str]:
    if len(files) < _PARALLEL_ABOVE:
        return dict(_verify_files(repo, reader, files, ticker))
    import multiprocessing  # here, not at the top: every sapwood command would pay for it
    from concurrent.futures import ProcessPoolExecutor

    bad: dict[ObjectId, str] = {}
    context = multiprocessing.get_context("spawn")  # never fork a process holding LMDB
    workers = _workers()
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        # a few batches in flight per worker, not all of them queued (pool.map would)
        pending: deque[tuple[int, Future[list[tuple[bytes, str]]]]] = deque()
        for ordered in _in_inode_order(repo, files):
            for start in range(0, len(ordered), _BATCH):
                batch = b"".join(ordered[start : start + _BATCH])
                pending.append(
                    (len(batch) // ID_BYTES, pool.submit(_verify_batch, str(repo.path), batch))
                )
                if len(pending) >= 4 * workers:
                    _collect(pending.popleft(), bad, ticker)
        while pending:
            _collect(pending.popleft(), bad, ticker)
    return bad


def _in_inode_order(repo: Repository, files: list[ObjectId]) -> Iterator[list[ObjectId]]:
    """``files`` (sorted by id) one objects/XX directory at a time, each sorted by the
    inode numbers its directory lists (store/diskorder.py says why)."""
    start = 0
    while start < len(files):
        first = files[start][0]
        end = start
        while end < len(files) and files[end][0] == first:
            end += 1
        group = files[start:end]
        start = end
        inodes = inode_numbers(os.path.dirname(repo.object_path(group[0])))
        yield sorted(group, key=lambda oid: inodes.get(oid[1:].hex(), 0))


def _collect(
    done: tuple[int, Future[list[tuple[bytes, str]]]], bad: dict[ObjectId, str], ticker: Ticker
) -> None:
    count, future = done
    bad.update((ObjectId(oid), msg) for oid, msg in future.result())
    ticker.add(count)


def _verify_files(
    repo: Repository, reader: IndexReader, files: list[ObjectId], ticker: Ticker | None = None
) -> Iterable[tuple[ObjectId, str]]:
    for start in range(0, len(files), _PREFETCH):
        chunk = files[start : start + _PREFETCH]
        repo.content.prefetch(chunk)
        yield from _verify_chunk(repo, reader, chunk)
        if ticker is not None:
            ticker.add(len(chunk))


def _verify_chunk(
    repo: Repository, reader: IndexReader, files: list[ObjectId]
) -> Iterable[tuple[ObjectId, str]]:
    for object_id in files:
        record = reader.object(object_id)
        if record is None:
            yield object_id, "file object is missing"
            continue
        if record.kind is not ObjectType.FILE:
            yield object_id, f"is a {record.kind.suffix}, expected a file"
            continue
        problem = repo.content.verify(object_id, record.file_header_bytes, record.file_size)
        if problem:
            yield object_id, problem


_worker_repo: Repository | None = None


def _verify_batch(repo_path: str, ids: bytes) -> list[tuple[bytes, str]]:
    """Worker process: verify one batch of file objects (their ids, concatenated)."""
    global _worker_repo
    if _worker_repo is None:
        _worker_repo = Repository.open(Path(repo_path))
    objects = [ObjectId(ids[i : i + ID_BYTES]) for i in range(0, len(ids), ID_BYTES)]
    with _worker_repo.index.reader() as reader:
        found: list[tuple[bytes, str]] = list(_verify_files(_worker_repo, reader, objects))
    _worker_repo.index.release_pages()
    return found


def _check_archive_metadata(
    repo: Repository, reader: IndexReader, object_ids: set[ObjectId]
) -> dict[ObjectId, str]:
    """Archive mode serves metadata as files too: each must equal the index's copy."""
    bad: dict[ObjectId, str] = {}
    for object_id in object_ids:
        record = reader.object(object_id)
        if record is None:
            continue  # already reported as missing
        path = repo.object_path(object_id, record.kind)
        try:
            with open(open_object_file(path, object_id), "rb") as served:
                same = served.read(len(record.payload) + 1) == record.payload
        except ObjectMissingError:
            bad[object_id] = f"{record.kind.suffix} file is missing from objects/"
        except (CorruptObjectError, OSError) as exc:
            bad[object_id] = f"{record.kind.suffix} file cannot be served: {exc}"
        else:
            if not same:
                bad[object_id] = f"corrupted {record.kind.suffix} file: differs from the index"
    return bad


def _delete(repo: Repository, bad: set[ObjectId], broken: set[ObjectId]) -> list[ObjectId]:
    """Drop bad objects (index first: the commit point), then their files."""
    with repo.index.reader() as reader:
        kinds = {oid: rec.kind for oid in bad if (rec := reader.object(oid)) is not None}
    repo.index.apply(WriteBatch(remove_objects=bad, partial_mark=broken - bad))
    for object_id, kind in kinds.items():
        Path(repo.object_path(object_id, kind)).unlink(missing_ok=True)
    for object_id in bad - kinds.keys():
        Path(repo.object_path(object_id)).unlink(missing_ok=True)
    log.info("deleted %d corrupt objects, marked %d commits partial", len(bad), len(broken))
    return sorted(bad)


def _workers() -> int:
    return int(os.environ.get("SAPWOOD_FSCK_WORKERS", 0)) or (os.cpu_count() or 1)
