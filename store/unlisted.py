"""Object files the index does not list, found with a count for progress, and whether a
running transaction may be the reason (fsck --all runs beside commits; prune does not)
or is what an exclusive lock waits for.

A commit or pull publishes its files into objects/ a batch at a time just before the
index transaction that lists them, so beside one the listing sees files that are not
leftovers at all: it holds a staging directory in REPO/tmp, locked, for its whole life.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from store.index import IndexReader
from store.locking import try_lock_dir, unlock_and_close
from store.progress import TaskCallback, Ticker, tick
from store.reachability import orphan_files
from store.repo import Repository

PHASE = "finding unlisted files"
# before an exclusive lock is taken
WAITING = "waiting for a running commit or pull, or a pull-local reading this repository"


def unlisted_files(
    repo: Repository, reader: IndexReader, progress: TaskCallback | None = None
) -> list[Path]:
    """The object files ``reader``'s index does not list, one objects/XX directory at a
    time; ``progress`` is told of the directories done out of how many."""
    objects = repo.path / "objects"
    ticker = Ticker(progress, PHASE, _directories(objects), "dir")

    def one_more_directory() -> None:
        repo.index.release_pages()
        ticker.add(1)

    found = orphan_files(objects, reader, one_more_directory)
    ticker.done = ticker.total or 0  # a directory gone or unreadable meanwhile counts as done
    ticker.finish()
    return [path for path in found if not _is_directory(path)]


def _is_directory(path: Path) -> bool:
    """A directory named like an object (objects/ab/cdef/) is no leftover of a writer:
    prune failed on it ('Is a directory') midway, and on every run after (attack8.md 6)."""
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def still_unlisted(repo: Repository, paths: list[Path]) -> tuple[int, bool]:
    """How many of ``paths`` (found by an older reader) the index does not list now, and
    whether a commit or pull runs that may have published them. Asked in that order:
    a writer gone by the time it is asked had its files listed before the new reader
    looks, so what is left beside no writer is a leftover that prune removes."""
    if not paths:
        return 0, False
    running = _writer_state(repo) is not False  # unknown: another user's tmp/ (attack8.md 13)
    with repo.index.reader() as reader:
        left = sum(1 for path in paths if not reader.has_object(_object_id(path)))
    return left, running and left > 0


def tell_if_waiting(repo: Repository, progress: TaskCallback | None) -> None:
    """Before taking the exclusive lock, tell ``progress`` when a commit or pull runs, or
    a pull-local of another repository reads this one (its shared lock, with no staging
    directory here: review22 8): the lock waits for it, minutes behind a large one, and
    nothing else moves."""
    if progress is not None and (writer_running(repo) or _lock_busy(repo.path)):
        tick(progress, WAITING)


def _lock_busy(path: Path) -> bool:
    """Whether another open file holds the repository's lock now; False when it cannot
    be told. Racy by nature: it only decides whether to say "waiting"."""
    try:
        fd = try_lock_dir(path)
    except OSError:
        return False
    if fd is None:
        return True
    unlock_and_close(fd, os.getpid())
    return False


def writer_running(repo: Repository) -> bool:
    """Whether a commit or pull holds a staging directory now (its lock is taken)."""
    return _writer_state(repo) is True


def _writer_state(repo: Repository) -> bool | None:
    """writer_running's answer; None when it cannot be told: REPO/tmp or a staging
    directory in it is another user's, closed to this one (fsck --all by a reader of
    someone else's repository said its running commit's files were prune's)."""
    tmp = repo.path / "tmp"
    try:
        with os.scandir(tmp) as entries:
            staging = [tmp / e.name for e in entries if e.name.startswith("staging-")]
    except PermissionError:
        return None
    except OSError:
        return False
    unknown = False
    for entry in staging:
        try:
            fd = try_lock_dir(entry)
        except PermissionError:
            unknown = True  # not ours to open
            continue
        except OSError:
            continue
        if fd is None:
            return True  # held, or just removed by a transaction that ended
        os.close(fd)
    return None if unknown else False


def _object_id(path: Path) -> bytes:
    return bytes.fromhex(path.parent.name + path.name.partition(".")[0])


def _directories(objects: Path) -> int:
    try:
        with os.scandir(objects) as entries:
            return sum(1 for e in entries if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return 0
