"""Index.release_pages (store/index.py) really lets go of the index's mapped pages.

Commit, fsck, prune and the mount daemon call it to keep their memory bounded; were the
mapping of data.mdb not found (a path written differently in /proc/self/maps, say),
it would silently do nothing and only the slow million-file runs would notice.
"""

from __future__ import annotations

import mmap
import os
import random
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from store import FileHeader, ObjectType, Repository, index_env, mapped_pages
from store.index_types import WriteBatch

REG = stat.S_IFREG | 0o644


def _resident_kib(data_file: Path) -> int:
    """This process's resident KiB of the mappings of ``data_file`` (/proc/self/smaps)."""
    target = os.path.realpath(data_file)
    resident, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split(maxsplit=5)
            if "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's first line
                inside = len(fields) == 6 and fields[5].rstrip("\n") == target
            elif inside and fields[0] == "Rss:":
                resident += int(fields[1])
    return resident


def test_release_pages_drops_the_mapped_index_pages(user_repo: Repository) -> None:
    with user_repo.transaction() as txn:
        for n in range(6000):
            txn.write_file(FileHeader(0, 0, REG), b"file %d" % n)
    data_file = user_repo.path / "index" / "data.mdb"
    with user_repo.index.reader() as reader:
        assert sum(1 for _ in reader.iter_objects()) == 6000  # every page read
        before = _resident_kib(data_file)
        user_repo.index.release_pages()
        after = _resident_kib(data_file)
        assert sum(1 for _ in reader.iter_objects()) == 6000  # and read again
    assert before >= 256, f"only {before} KiB of the index mapped: nothing to release"
    assert after < before // 4, f"{before} KiB mapped, {after} KiB after release_pages"


class _Indexed:
    """6,000 file objects in random order, and how much of the index a full read maps."""

    def __init__(self, repo: Repository) -> None:
        self.repo, self.data_file = repo, repo.path / "index" / "data.mdb"
        with repo.transaction() as txn:
            self.ids = [txn.write_file(FileHeader(0, 0, REG), b"file %d" % n) for n in range(6000)]
        random.Random(1).shuffle(self.ids)
        with repo.index.reader() as reader:
            assert sum(1 for _ in reader.iter_objects()) == 6000
            self.everything = _resident_kib(self.data_file)
        assert self.everything >= 256, f"only {self.everything} KiB mapped: too small a test"
        repo.index.release_pages()

    def assert_let_go(self, what: str) -> None:
        after = _resident_kib(self.data_file)
        assert after < self.everything // 2, f"{after} of {self.everything} KiB held {what}"


@pytest.fixture
def indexed(user_repo: Repository) -> _Indexed:
    return _Indexed(user_repo)


def test_point_reads_let_go_of_their_pages_as_they_go(
    indexed: _Indexed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that looks objects up one by one (checkout, re-commit) never holds more
    than about COUNT_PER_LOOK leaves: at a million files the whole 480 MiB index
    stayed resident before (issue 15). Scaled down: 6,000 objects, a release every 50."""
    monkeypatch.setattr(index_env, "COUNT_PER_LOOK", 50)
    monkeypatch.setattr(index_env, "MAPPED_BUDGET", 0)
    with indexed.repo.index.reader() as reader:
        assert all(reader.has_object(i) for i in indexed.ids[:3000])
        assert all(found is not None for found in reader.regular_files(indexed.ids[3000:]))
        indexed.assert_let_go("after point reads")


def test_the_commit_point_lets_go_of_the_pages_it_checks(
    indexed: _Indexed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit point of a re-commit checks every reused object (``required``) inside
    its write transaction: at a million files that held 357 MiB of the index resident.
    Scaled down: 6,000 required objects, a look at every row (the index is only about
    ten fault-around windows of 64 KiB: 50 rows after the last look could map it all)."""
    monkeypatch.setattr(index_env, "COUNT_PER_LOOK", 1)
    monkeypatch.setattr(index_env, "MAPPED_BUDGET", 0)
    indexed.repo.index.apply(WriteBatch(required={(i, ObjectType.FILE) for i in indexed.ids}))
    indexed.assert_let_go("after the commit point")


def test_removing_objects_lets_go_of_the_pages_it_reads(
    indexed: _Indexed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prune removes a dead tree's directories from the index in one write transaction:
    at a million files that mapped 420 MiB of the index. Scaled down: 5,000 removals,
    a look at every row."""
    monkeypatch.setattr(index_env, "COUNT_PER_LOOK", 1)
    monkeypatch.setattr(index_env, "MAPPED_BUDGET", 0)
    indexed.repo.index.apply(WriteBatch(remove_objects=set(indexed.ids[:5000])))
    indexed.assert_let_go("after the removals")
    with indexed.repo.index.reader() as reader:
        assert sum(1 for _ in reader.iter_objects()) == 1000


def test_an_index_within_the_budget_stays_mapped(
    indexed: _Indexed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Releasing costs a fault per page read again (8 us a file of an unchanged
    re-commit of 100,000 files when it came every 2,048 reads): an index that fits the
    budget is never released, whatever the count says."""
    monkeypatch.setattr(index_env, "COUNT_PER_LOOK", 50)
    with indexed.repo.index.reader() as reader:
        assert all(reader.has_object(i) for i in indexed.ids)
        after = _resident_kib(indexed.data_file)
    assert after > indexed.everything // 2, f"{after} of {indexed.everything} KiB kept"


class _OtherFile:
    """A file of ``size`` bytes mapped shared and made resident: file-backed memory of
    this process that is not the index's (a library, another file mapped by a caller)."""

    def __init__(self, path: Path, size: int) -> None:
        with open(path, "wb") as made:
            made.truncate(size)
        with open(path, "rb") as opened:
            self.map = mmap.mmap(opened.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ)
        for offset in range(0, size, mmap.PAGESIZE):
            self.map[offset]  # faulted in, resident from now on

    def close(self) -> None:
        self.map.close()


def _count_releases(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one each time the index's map is let go of."""
    releases: list[int] = []
    real = mapped_pages.madvise_dontneed  # what index_env imports

    def counted(start: int, length: int) -> None:
        releases.append(start)
        real(start, length)

    monkeypatch.setattr(index_env, "madvise_dontneed", counted)
    return releases


def test_memory_mapped_elsewhere_does_not_release_the_index_every_look(
    indexed: _Indexed, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """File-backed memory the process maps after the first release (a library loaded
    late, a file a caller maps) counts in /proc/self/statm as the index's pages do:
    measured against the first baseline only, 8 MiB of it kept the process past the
    budget for good and every look (every COUNT_PER_LOOK reads) released an index
    that fits the budget (on a 39 MiB index, 781 releases in 200,000 reads, 2.9 us a
    read instead of 1.1). The baseline is measured again after each release."""
    monkeypatch.setattr(index_env, "COUNT_PER_LOOK", 50)
    monkeypatch.setattr(index_env, "MAPPED_BUDGET", 4 << 20)  # more than the whole index
    with indexed.repo.index.reader() as reader:
        assert all(reader.has_object(i) for i in indexed.ids[:100])  # the first look
        other = _OtherFile(tmp_path / "other", 8 << 20)
        try:
            releases = _count_releases(monkeypatch)
            assert all(reader.has_object(i) for i in indexed.ids)  # 120 looks
        finally:
            other.close()
    assert len(releases) <= 2, f"{len(releases)} releases of an index within the budget"


def test_memory_unmapped_since_the_baseline_does_not_let_the_index_grow_past_the_budget(
    indexed: _Indexed, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A baseline measured while something else was mapped (another file, another
    index's pages) stays too high once that is unmapped: the index could then grow by
    as much again before a release. The baseline comes down to what is mapped."""
    monkeypatch.setattr(index_env, "COUNT_PER_LOOK", 1)  # a look before each read
    monkeypatch.setattr(index_env, "MAPPED_BUDGET", 64 << 10)
    indexed.repo.close()
    other = _OtherFile(tmp_path / "other", 8 << 20)
    repo = Repository.open(indexed.repo.path)  # its first look comes with the file mapped
    try:
        with repo.index.reader() as reader:
            assert reader.has_object(indexed.ids[0])  # released, measured
            other.close()
            assert all(reader.has_object(i) for i in indexed.ids)
            indexed.assert_let_go("after point reads, with the baseline measured too high")
    finally:
        repo.close()


def test_threads_reading_while_others_release_read_what_was_written(
    indexed: _Indexed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pull's pool threads read the index through snapshots of their own and count into
    one budget, unlocked: a look (and a release of the whole map) comes from any of
    them while the others are inside LMDB. The map is read-only and shared, so a page
    dropped under a reader faults back with the same bytes: every read finds its
    record, whatever the others release."""
    monkeypatch.setattr(index_env, "COUNT_PER_LOOK", 1)
    monkeypatch.setattr(index_env, "MAPPED_BUDGET", 0)
    releases = _count_releases(monkeypatch)
    index = indexed.repo.index

    def read_all(offset: int) -> int:
        ids = indexed.ids[offset:] + indexed.ids[:offset]
        with index.reader() as reader:
            records = [reader.object(i) for i in ids]
        return sum(1 for r in records if r is not None and r.kind is ObjectType.FILE)

    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(read_all, (0, 1500, 3000, 4500)))
    assert found == [6000] * 4
    assert len(releases) > 100, f"only {len(releases)} releases: the threads did not race"
