"""Review 23 (session 18), beside finding 2: the stat cache (fs/statcache.py) trusts the
same kind of witness the copies record did, (device, inode, size, mtime, ctime), and
ctime does not move with every change of the bytes: a page of a shared writable mapping
dirtied before the cached commit is written again without a fault (on tmpfs such a page
is never cleaned, so it is never faulted again), and a crash after an fdatasync'ed write
in place keeps the new bytes with the old timestamps. The next commit then records the
old object for a file that holds other bytes."""

from __future__ import annotations

import mmap
import os
import time
from pathlib import Path

import pytest

from fs.commit import CommitRequest, Layer, LayerKind, make_commit
from store import Repository
from tests.helpers import IS_ROOT, cat_bytes, small_tmpfs

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="mounts a tmpfs")

OLD = bytes(range(256)) * 32  # 8 KiB


def _precondition(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(f"the setup did not hold: {what}")


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="review23 9: the stat cache serves the object of a file whose bytes changed "
    "while its stat stayed (a write through a dirty shared mapping; a crash after "
    "fdatasync): the commit records the old content",
)
def test_a_commit_records_the_bytes_the_file_holds(user_repo: Repository, tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "src", "4m") as source:
        path = source / "db"
        path.write_bytes(OLD)
        fd = os.open(path, os.O_RDWR)
        mapped = mmap.mmap(fd, 0)
        os.close(fd)
        try:
            mapped[0:4] = mapped[0:4]  # dirtied, same bytes: the fault sets the times
            time.sleep(1.2)  # older than the commit's start by its racy margin: cacheable
            first = make_commit(
                user_repo, CommitRequest("main", [Layer(LayerKind.DIR, str(source))])
            )
            before = os.stat(path)
            mapped[0:4] = b"USER"  # the dirty page again: no fault, no time changed
            after = os.stat(path)
            _precondition(
                (before.st_mtime_ns, before.st_ctime_ns) == (after.st_mtime_ns, after.st_ctime_ns),
                "the timestamps stayed",
            )
            second = make_commit(
                user_repo, CommitRequest("main", [Layer(LayerKind.DIR, str(source))])
            )
            _precondition(second.stats.cache_hits == 1, "the second commit used the cache")
        finally:
            mapped.close()
        _precondition(first.stats.files_read == 1, "the first commit read the file")
        committed = cat_bytes(user_repo.path, second.commit_id.hex(), "/db")
        assert committed == path.read_bytes(), "the commit holds bytes the file no longer has"
