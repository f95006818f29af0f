"""The mount's bound on mapped index pages (mountd/mapped.py), without a kernel: the
view asks often enough, the bound lets go only past its budget, and archive objects
held in memory share that budget."""

from __future__ import annotations

import mmap
import os
import stat
import tracemalloc
from pathlib import Path

import pytest

from mountd import sources as sources_module
from mountd.mapped import (
    INDEX_BUDGET_ENV,
    INDEX_MAP_BUDGET,
    MappedIndexBound,
    bound_view_memory,
)
from mountd.records import INDEX_CHECK_RECORDS
from mountd.sources import ObjectSources
from mountd.view import ROOT_INODE, CommitView
from store import (
    Commit,
    DirEntry,
    DirMeta,
    DirTree,
    FileHeader,
    ObjectId,
    RepoMode,
    Repository,
)
from tests.helpers import many_directories_commit

MIB = 1 << 20


def test_the_view_asks_every_few_dozen_records_it_reads(user_repo: Repository) -> None:
    many_directories_commit(user_repo, 3, 300)
    view = CommitView(user_repo, user_repo.refs()["many"])
    asked_at: list[int] = []
    view.index_hook = lambda: asked_at.append(view.records_read)
    for _, attrs, _ in list(view.entries(ROOT_INODE, 0)):
        for name, _, _ in view.entries(attrs.ino, 0):
            view.lookup(attrs.ino, name)
    assert view.records_read >= 900  # every file's record, once
    # A read of a batch of files or of a tree comes between two asks, at most.
    gaps = [b - a for a, b in zip([0, *asked_at], asked_at, strict=False)]
    assert len(asked_at) >= view.records_read // (2 * INDEX_CHECK_RECORDS)
    assert max(gaps) <= 2 * INDEX_CHECK_RECORDS


class _Releases:
    """A repository stand-in that counts release_index_pages calls."""

    def __init__(self) -> None:
        self.released = 0

    def release_index_pages(self) -> None:
        self.released += 1


def test_pages_are_let_go_only_past_the_budget(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"x" * (16 * MIB))
    repo = _Releases()
    bound = MappedIndexBound(repo, budget=8 * MIB)  # type: ignore[arg-type]
    with open(data, "rb") as file, mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        for offset in range(0, 4 * MIB, 4096):  # 4 MiB mapped: under the budget
            mapped[offset]
        bound()
        assert repo.released == 0
        for offset in range(0, 16 * MIB, 4096):  # 16 MiB: past it
            mapped[offset]
        bound()
        assert repo.released == 1 and bound.drops == 1
        mapped.madvise(mmap.MADV_DONTNEED)  # what release_index_pages does to the index
    bound()
    assert repo.released == 1


def test_a_budget_that_is_not_ascii_digits_falls_back_to_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """'²' is a digit to str.isdigit but not to int(): the daemon must not die of it."""
    repo = _Releases()
    for chosen in ("²", "٣", "-5", "x"):
        monkeypatch.setenv(INDEX_BUDGET_ENV, chosen)
        bound = MappedIndexBound(repo)  # type: ignore[arg-type]
        assert bound.limit - bound.mapped_bytes() > INDEX_MAP_BUDGET // 2
    monkeypatch.setenv(INDEX_BUDGET_ENV, "500")
    bound = MappedIndexBound(repo)  # type: ignore[arg-type]
    assert bound.limit - bound.mapped_bytes() > 400 * MIB


def test_bytes_held_elsewhere_count_against_the_budget(tmp_path: Path) -> None:
    """Archive objects the view holds and index pages share one budget: pages under the
    budget alone are let go of once what is held brings them past it."""
    data = tmp_path / "data"
    data.write_bytes(b"x" * (16 * MIB))
    repo = _Releases()
    held = [0]
    bound = MappedIndexBound(repo, budget=8 * MIB, held=lambda: held[0])  # type: ignore[arg-type]
    with open(data, "rb") as file, mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        for offset in range(0, 4 * MIB, 4096):  # 4 MiB mapped: under the budget
            mapped[offset]
        bound()
        assert repo.released == 0
        held[0] = 6 * MIB  # 4 + 6 > 8
        bound()
        assert repo.released == 1
        mapped.madvise(mmap.MADV_DONTNEED)
    held[0] = 0
    bound()
    assert repo.released == 1


def _archive_commit(repo: Repository, tiny: int, large: int) -> ObjectId:
    """``tiny`` distinct files of a few bytes and ``large`` of 64 KiB of random bytes
    (they do not compress), in two directories."""
    with repo.transaction() as txn:
        meta = txn.write_dirmeta(DirMeta(0, 0, stat.S_IFDIR | 0o755))
        header = FileHeader(0, 0, stat.S_IFREG | 0o644)
        names = {
            f"t{n:05d}".encode(): txn.write_file(header, f"{n}\n".encode()) for n in range(tiny)
        }
        randoms = {
            f"r{n:03d}".encode(): txn.write_file(header, os.urandom(64 << 10)) for n in range(large)
        }
        subdirs = {
            name: DirEntry(txn.write_dirtree(DirTree.build(files, {})), meta)
            for name, files in ((b"tiny", names), (b"large", randoms))
        }
        tree = txn.write_dirtree(DirTree.build({}, subdirs))
        commit_id = txn.write_commit(Commit(tree, meta, None, 0))
        txn.set_ref("main", commit_id)
    return commit_id


def test_a_walk_that_reads_an_archive_repository_holds_to_the_budget(tmp_path: Path) -> None:
    """Decompressed archive objects take half the daemon's budget at most, counted with
    what keeping each costs (a tiny file's bytes are the least of it). Before, they
    held 32 MiB whatever the budget, tiny files weighed only their bytes, and reading
    these 6.4 MiB of files and 3,000 tiny ones grew the daemon's heap by about 9 MiB."""
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    view = CommitView(repo, _archive_commit(repo, tiny=3000, large=100))
    budget = 2 * MIB
    bound_view_memory(view, budget)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        read = 0
        for _, directory, _ in list(view.entries(ROOT_INODE, 0)):
            for _, attrs, _ in view.entries(directory.ino, 0):
                read += len(view.read(attrs.ino, 0, 1 << 17))
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        view.close()
    assert read > 100 * (64 << 10)  # every file was read
    assert view.sources.held_bytes() <= budget // 2
    grown = (after - before) / MIB
    print(f"the view's heap grew {grown:.1f} MiB")
    # half the budget, and the listings, stat batches and inodes shown (about 2 MiB)
    assert grown < budget / MIB / 2 + 2.5


def test_tiny_archive_objects_weigh_what_keeping_them_costs(tmp_path: Path) -> None:
    """A tiny object's bytes are the least of what keeping it costs: weighed by its
    bytes alone, 6,000 of a few bytes each held 1.2 MiB within a 256 KiB budget."""
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    with repo.transaction() as txn:
        header = FileHeader(0, 0, stat.S_IFREG | 0o644)
        ids = [txn.write_file(header, f"{n}\n".encode()) for n in range(6000)]
    stats = repo.read_file_stats(ids)
    sources = ObjectSources(repo)
    limit = 256 << 10
    sources.hold_at_most(limit)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for n, (file_id, found) in enumerate(zip(ids, stats, strict=True)):
            sources.prepare(1, file_id, found.header, found.size)
            assert sources.read(1, 0, 16) == f"{n}\n".encode()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        sources.close()
    assert sources.held_bytes() <= limit
    print(f"held {(after - before) >> 10} KiB")
    assert after - before < 2 * limit


def test_a_large_budget_keeps_no_more_archive_objects_than_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A budget raised to keep a large index mapped (page cache, which the kernel can
    reclaim) does not raise what archive objects may hold (anonymous memory, which it
    cannot) past the cap they had before they shared the budget (_KEPT_BYTES; here
    made 256 KiB). Half of a 1 GiB budget held all 64 objects: 4.1 MiB."""
    monkeypatch.setattr(sources_module, "_KEPT_BYTES", 256 << 10)
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    view = CommitView(repo, _archive_commit(repo, tiny=0, large=64))
    bound_view_memory(view, 1 << 30)
    try:
        for _, directory, _ in list(view.entries(ROOT_INODE, 0)):
            for _, attrs, _ in view.entries(directory.ino, 0):
                assert len(view.read(attrs.ino, 0, 1 << 17)) == 64 << 10
        assert view.sources.held_bytes() <= 256 << 10
    finally:
        view.close()


@pytest.mark.parametrize("budget_mib", [0, 1])
def test_a_budget_under_two_mib_is_not_passed_by_one_object(
    tmp_path: Path, budget_mib: int
) -> None:
    """With SAPWOOD_MOUNT_INDEX_MIB=0 or 1, a decompressed object or frame alone
    passes half the budget: kept anyway (the LRU keeps its newest entry however
    heavy), it made ``held`` pass the budget, and the index bound drop the index's
    pages at every look, none of them mapped (review8 7). It is served, not kept."""
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    contents = [os.urandom(MIB - 100), os.urandom(3 * MIB)]
    with repo.transaction() as txn:
        header = FileHeader(0, 0, stat.S_IFREG | 0o644)
        ids = [txn.write_file(header, content) for content in contents]
    stats = repo.read_file_stats(ids)
    sources = ObjectSources(repo)
    limit = (budget_mib << 20) // 2
    sources.hold_at_most(limit)
    try:
        for ino, (content, file_id, found) in enumerate(zip(contents, ids, stats, strict=True)):
            for offset in range(0, len(content), 128 << 10):
                if not sources.is_open(ino):
                    sources.prepare(ino, file_id, found.header, found.size)
                assert (
                    sources.read(ino, offset, 128 << 10) == content[offset : offset + (128 << 10)]
                )
                assert sources.held_bytes() <= limit
    finally:
        sources.close()


def test_memory_mapped_after_the_start_does_not_release_at_every_call(tmp_path: Path) -> None:
    """A file mapped after the bound was made (a library imported on first use) is not
    the index: past the budget once, the bound releases once, then measures anew; kept
    from the start, the limit released at every call for good (review10 7)."""
    data = tmp_path / "data"
    data.write_bytes(b"x" * (16 * MIB))
    repo = _Releases()
    bound = MappedIndexBound(repo, budget=8 * MIB)  # type: ignore[arg-type]
    with open(data, "rb") as file, mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        for offset in range(0, 16 * MIB, 4096):  # 16 MiB that release_index_pages keeps
            mapped[offset]
        for _ in range(10):
            bound()
        assert repo.released == 1
        for offset in range(0, 16 * MIB, 4096):
            mapped[offset]
    bound()  # 16 MiB fewer mapped: the limit comes down with it
    assert bound.limit <= bound.mapped_bytes() + 8 * MIB
