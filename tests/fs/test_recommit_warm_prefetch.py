"""The prefetcher (fs/prefetch.py) ends its threads once their listings stop reading the
disk: a farm that was only partly evicted (a few cold directories start them) must not
pay for threads listing the warm rest, competing with the scan for the interpreter.
Disk reads are simulated, as in tests/fs/test_scan_prefetch.py: here only the scan's
thread sees its block counter grow, so every listing of the threads reads nothing."""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import fs.prefetch
import fs.prefetch_threads
from fs.prefetch_threads import PrefetchThreads
from store import Repository
from tests.fs.prefetching import prefetcher_listings, reads_from_the_disk
from tests.helpers import commit_dir


def _tree(base: Path, directories: int) -> Path:
    source = base / "src"
    for number in range(directories):
        leaf = source / f"d{number:03}"
        leaf.mkdir(parents=True)
        (leaf / "file").write_bytes(b"%d\n" % number)
    return source


def _reads_in_the_scan_only(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = itertools.count()
    main = threading.main_thread()

    def blocks_read() -> int:
        return next(blocks) if threading.current_thread() is main else 0

    reads_from_the_disk(monkeypatch, blocks_read)


def test_threads_whose_listings_read_nothing_stop_early_and_the_commit_is_the_same(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _tree(tmp_path, 60)
    warm = commit_dir(user_repo, source, "warm")
    listed = prefetcher_listings(monkeypatch)
    monkeypatch.setattr(fs.prefetch_threads, "_WARM_STOP", 4)
    monkeypatch.setattr(fs.prefetch, "_THREADS", 2)
    _reads_in_the_scan_only(monkeypatch)
    cold = commit_dir(user_repo, source, "cold")
    # The root and d000, which the scan had listed before the threads started (they do
    # not count), the streak, and what the other thread had begun.
    assert 2 + 4 <= len(listed) <= 2 + 4 + 2
    trees = [user_repo.read_commit(commit) for commit in (warm, cold)]
    assert (trees[0].tree, trees[0].meta) == (trees[1].tree, trees[1].meta)
    assert not [t for t in threading.enumerate() if t.name == "sapwood-prefetch"]


def test_threads_whose_listings_read_go_on_to_the_end(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing that reads resets the streak: a cold tree is listed whole."""
    source = _tree(tmp_path, 60)
    listed = prefetcher_listings(monkeypatch)
    monkeypatch.setattr(fs.prefetch_threads, "_WARM_STOP", 4)
    blocks = itertools.count()
    reads_from_the_disk(monkeypatch, lambda: next(blocks))  # every look reads
    commit_dir(user_repo, source, "cold")
    assert len(listed) == 61  # the root and its 60 directories, each once


def _objects_listing(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cold: set[int]
) -> tuple[bool, int]:
    """List objects/ with the listings numbered in ``cold`` reading the disk (simulated):
    whether threads took over, and the listing's length."""
    import store.inodes as inodes

    commit_dir(user_repo, _tree(tmp_path, 40), "objects")
    looks = itertools.count()
    blocks = [0]

    def blocks_read() -> int:
        look = next(looks)  # two looks a listing: before, after
        if look % 2 and look // 2 in cold:
            blocks[0] += 8
        return blocks[0]

    pools: list[int] = []
    real_pool = ThreadPoolExecutor  # what store.inodes lists with

    def pool(workers: int) -> ThreadPoolExecutor:
        pools.append(workers)
        return real_pool(workers)

    monkeypatch.setattr(inodes, "_blocks_read", blocks_read)
    monkeypatch.setattr(inodes, "ThreadPoolExecutor", pool)
    listing = inodes._list_objects(str(user_repo.path / "objects"))
    return bool(pools), len(listing)


def test_one_cold_directory_of_objects_keeps_the_listing_in_one_thread(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threaded, count = _objects_listing(user_repo, tmp_path, monkeypatch, {3, 9})
    assert (threaded, count) == (False, 40)


def test_two_cold_directories_of_objects_in_a_row_hand_the_rest_to_threads(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threaded, count = _objects_listing(user_repo, tmp_path, monkeypatch, {3, 4})
    assert (threaded, count) == (True, 40)


def test_the_directories_the_scan_passed_before_the_threads_started_do_not_stop_them(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The threads start at the root, behind the scan: what it listed before its cold
    listings started them is warm because it just read it, and says nothing of the
    tree ahead. A tree warm for its first _WARM_STOP directories and cold after (a
    re-commit after an interrupted one) is still listed ahead, whole."""
    source = _tree(tmp_path, 60)
    listed = prefetcher_listings(monkeypatch)
    monkeypatch.setattr(fs.prefetch_threads, "_WARM_STOP", 8)
    scan_looks = itertools.count()
    local = threading.local()
    real_list = PrefetchThreads._list

    def cold_from_d019(self: PrefetchThreads, path: tuple[bytes, ...], subdirs: list[Any]) -> None:
        if path and path[0] >= b"d019":
            local.blocks = getattr(local, "blocks", 0) + 8
        real_list(self, path, subdirs)

    def blocks_read() -> int:
        if threading.current_thread() is threading.main_thread():
            return max(0, next(scan_looks) - 39)  # root, d000-d018 warm (two looks each)
        return getattr(local, "blocks", 0)

    monkeypatch.setattr(PrefetchThreads, "_list", cold_from_d019)
    reads_from_the_disk(monkeypatch, blocks_read)
    commit_dir(user_repo, source, "cold")
    assert len(listed) == 61  # the root and its 60 directories, each once
