"""Review 23 (session 18), beside finding 2: the stat cache (fs/statcache.py) trusts the
same kind of witness the copies record did, (device, inode, size, mtime, ctime), and
ctime does not move with every change of the bytes: a page of a shared writable mapping
dirtied before the cached commit is written again without a fault (on tmpfs such a page
is never cleaned, so it is never faulted again), and a crash after an fdatasync'ed write
in place keeps the new bytes with the old timestamps. The next commit then records the
old object for a file that holds other bytes (review23 9): git's index has the same blind
spot, documented in fs/statcache.py; the remedy is a commit that reads every file
(`sapwood commit --read-all`, CommitRequest.read_all), which also writes the cache
afresh."""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fs.commit import CommitRequest, CommitResult, Layer, LayerKind, make_commit
from store import Repository
from tests.helpers import IS_ROOT, cat_bytes, run, small_tmpfs

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="mounts a tmpfs")

OLD = bytes(range(256)) * 32  # 8 KiB


def _precondition(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(f"the setup did not hold: {what}")


def _commit(repo: Repository, source: Path, read_all: bool = False) -> CommitResult:
    layers = [Layer(LayerKind.DIR, str(source))]
    return make_commit(repo, CommitRequest("main", layers, read_all=read_all))


@contextmanager
def _changed_behind_the_cache(repo: Repository, tmp_path: Path) -> Iterator[Path]:
    """A tree whose file ``db`` was committed twice, the second time vouched for by the
    stat cache after its bytes changed with its timestamps kept (a write through a
    shared mapping's page dirtied before the first commit): the source directory."""
    with small_tmpfs(tmp_path / "src", "4m") as source:
        path = source / "db"
        path.write_bytes(OLD)
        fd = os.open(path, os.O_RDWR)
        mapped = mmap.mmap(fd, 0)
        os.close(fd)
        try:
            mapped[0:4] = mapped[0:4]  # dirtied, same bytes: the fault sets the times
            time.sleep(1.2)  # older than the commit's start by its racy margin: cacheable
            first = _commit(repo, source)
            before = os.stat(path)
            mapped[0:4] = b"USER"  # the dirty page again: no fault, no time changed
            after = os.stat(path)
            _precondition(
                (before.st_mtime_ns, before.st_ctime_ns) == (after.st_mtime_ns, after.st_ctime_ns),
                "the timestamps stayed",
            )
            second = _commit(repo, source)
            _precondition(first.stats.files_read == 1, "the first commit read the file")
            _precondition(second.stats.cache_hits == 1, "the second commit used the cache")
            yield source
        finally:
            mapped.close()


def test_a_commit_that_reads_all_records_the_bytes_the_file_holds(
    user_repo: Repository, tmp_path: Path
) -> None:
    """The stat cache's blind spot (documented), and its remedy: read_all reads the file
    (no cache hit), commits the bytes it holds, and writes the cache afresh, so the next
    plain commit is vouched for the new object."""
    with _changed_behind_the_cache(user_repo, tmp_path) as source:
        blind = cat_bytes(user_repo.path, "main", "/db")
        assert blind == OLD  # the blind spot: the cache vouched for the old object
        fresh = _commit(user_repo, source, read_all=True)
        assert (fresh.stats.files_read, fresh.stats.cache_hits) == (1, 0)
        assert cat_bytes(user_repo.path, "main", "/db") == b"USER" + OLD[4:]
        again = _commit(user_repo, source)
        assert again.stats.cache_hits == 1
        assert cat_bytes(user_repo.path, "main", "/db") == b"USER" + OLD[4:]


def test_the_command_reads_all_with_read_all(user_repo: Repository, tmp_path: Path) -> None:
    """`sapwood commit --read-all` commits the bytes the file holds."""
    with _changed_behind_the_cache(user_repo, tmp_path) as source:
        done = run("commit", "--repo", user_repo.path, "-b", "main", "--read-all", source)
        assert done.returncode == 0, done.stderr
        assert cat_bytes(user_repo.path, "main", "/db") == b"USER" + OLD[4:]
