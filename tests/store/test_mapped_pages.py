"""Letting go of the index's mapped pages (store/mapped_pages.py, SharedEnv.release_pages)
touches only the live mapping of data.mdb, never memory that now lies where it was.

madvise(MADV_DONTNEED) on a shared file mapping loses nothing (the pages fault back
in from the page cache); on private anonymous memory it zeroes it. Addresses kept
from a mapping that is gone (an environment closed, or reopened) may by then hold the
interpreter's heap.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import stat
from pathlib import Path

import lmdb
import pytest

from store import FileHeader, RepoMode, Repository, index_env
from store.mapped_pages import mapped_ranges

REG = stat.S_IFREG | 0o644
_PROT_READ_WRITE = 0x1 | 0x2
_MAP_PRIVATE_ANONYMOUS_FIXED_NOREPLACE = 0x02 | 0x20 | 0x100000
_PAGE = 4096


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


def test_a_closed_index_lets_go_of_nothing_mapped_where_it_was(
    user_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot read after its repository was closed (another thread closing it, a
    caller's slip) counts its read before LMDB refuses it: the release it may start
    must not madvise the closed map's old addresses, where anonymous memory (here a
    page put there on purpose) may now live."""
    with user_repo.transaction() as txn:
        txn.write_file(FileHeader(0, 0, REG), b"one file")
    shared = user_repo.index._shared
    reader_cm = user_repo.index.reader()
    reader = reader_cm.__enter__()
    user_repo.index.release_pages()  # the map's addresses, read and kept
    (start, _), *_ = shared.mapped_ranges()
    user_repo.close()  # the map is gone; its addresses are free for anything
    libc = _libc()
    page = libc.mmap(start, _PAGE, _PROT_READ_WRITE, _MAP_PRIVATE_ANONYMOUS_FIXED_NOREPLACE, -1, 0)
    assert page == start, "the closed map's address could not be taken again"
    try:
        ctypes.memset(page, 0x5A, _PAGE)
        monkeypatch.setattr(index_env, "COUNT_PER_LOOK", 1)
        monkeypatch.setattr(index_env, "MAPPED_BUDGET", 0)
        with pytest.raises(lmdb.Error):  # LMDB refuses a snapshot of a closed environment
            reader.has_object(b"\1" * 32)
        assert ctypes.string_at(page, _PAGE) == b"\x5a" * _PAGE, "anonymous memory zeroed"
    finally:
        libc.munmap(page, _PAGE)


def _resident_kib(path: Path) -> int:
    """Resident KiB of this process's mappings named ``path`` in /proc/self/smaps."""
    resident, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split(maxsplit=5)
            if "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's first line
                inside = len(fields) == 6 and fields[5].rstrip("\n") == str(path)
            elif inside and fields[0] == "Rss:":
                resident += int(fields[1])
    return resident


def test_the_map_is_found_once_its_repository_moved(user_repo: Repository) -> None:
    """The index is found in /proc/self/maps by its inode, not only by the path it was
    opened at: once the repository's directory is renamed (or its index replaced,
    deleted, or its path holds a newline) that path names nothing there, and letting
    go of the pages silently did nothing (review7 19)."""
    with user_repo.transaction() as txn:
        for n in range(6000):
            txn.write_file(FileHeader(0, 0, REG), b"file %d" % n)
    user_repo.close()
    repo = Repository.open(user_repo.path)  # mapped anew, its mapping not yet looked for
    moved = repo.path.with_name("moved")
    repo.path.rename(moved)
    data_file = moved / "index" / "data.mdb"
    try:
        with repo.index.reader() as reader:
            assert sum(1 for _ in reader.iter_objects()) == 6000  # every page read
            before = _resident_kib(data_file)
            repo.index.release_pages()
            after = _resident_kib(data_file)
    finally:
        repo.close()
    assert before >= 256, f"only {before} KiB of the index mapped: nothing to release"
    assert after < before // 4, f"{before} KiB mapped, {after} KiB after release_pages"


def test_a_caller_with_a_budget_of_its_own_keeps_what_point_reads_mapped(
    user_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mount daemon lets go of the index's pages on its own budget
    (SAPWOOD_MOUNT_INDEX_MIB, which may be raised to keep a large index mapped):
    once it takes that over, point reads no longer drop them every COUNT_PER_LOOK
    (scaled down here: after every read), which overrode a raised budget."""
    with user_repo.transaction() as txn:
        ids = [txn.write_file(FileHeader(0, 0, REG), b"file %d" % n) for n in range(6000)]
    data_file = user_repo.path / "index" / "data.mdb"
    with user_repo.index.reader() as reader:
        assert sum(1 for _ in reader.iter_objects()) == 6000
        everything = _resident_kib(data_file)
    user_repo.release_index_pages()
    monkeypatch.setattr(index_env, "COUNT_PER_LOOK", 1)
    monkeypatch.setattr(index_env, "MAPPED_BUDGET", 0)
    user_repo.take_over_index_page_releases()
    with user_repo.index.reader() as reader:
        assert all(reader.has_object(i) for i in ids)
        kept = _resident_kib(data_file)
    assert everything >= 256, f"only {everything} KiB of the index mapped: too small a test"
    assert kept > everything // 2, f"{kept} of {everything} KiB kept by point reads"


def _live_shared_mappings() -> list[tuple[int, int]]:
    """(start, end) of every shared mapping this process has now."""
    live = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if fields[1][3] == "s":
                low, high = (int(part, 16) for part in fields[0].split("-"))
                live.append((low, high))
    return live


def _assert_releases_touch_only_live_maps(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Let go of ``repo``'s index pages; every range given to madvise must be mapped."""
    advised: list[tuple[int, int]] = []
    monkeypatch.setattr(index_env, "madvise_dontneed", lambda s, n: advised.append((s, n)))
    repo.release_index_pages()
    live = _live_shared_mappings()
    assert advised, "nothing let go of"
    for start, length in advised:
        assert any(low <= start and start + length <= high for low, high in live), (
            f"madvise of {start:#x}+{length:#x}, where nothing shared is mapped any more"
        )


def _one_file(repo: Repository) -> bytes:
    with repo.transaction() as txn:
        return txn.write_file(FileHeader(0, 0, REG), b"one file")


def test_an_index_found_by_its_path_is_still_this_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path an index was opened at may name another repository's index by the time
    its map is looked for (two repositories renamed into each other's place): a
    mapping shown at that path but of another inode is not this index's."""
    paths = [tmp_path / "a", tmp_path / "b"]
    for path in paths:
        made = Repository.init(path, RepoMode.BARE_USER)
        _one_file(made)
        made.close()
    first, second = (Repository.open(path) for path in paths)
    try:
        paths[0].rename(tmp_path / "c")
        paths[1].rename(paths[0])  # the second now at the path the first was opened at
        first.release_index_pages()  # its map looked for, both open
        second.close()
        _assert_releases_touch_only_live_maps(first, monkeypatch)
    finally:
        first.close()
        second.close()


def test_a_map_no_line_shows_with_its_inode_is_found_by_its_path(tmp_path: Path) -> None:
    """Where /proc/self/maps shows another inode than stat (overlayfs may show a
    layer's file), the path still finds the mapping."""
    path = tmp_path / "data"
    path.write_bytes(b"\0" * _PAGE)
    with open(path, "rb") as opened:
        mapped = mmap.mmap(opened.fileno(), _PAGE, mmap.MAP_SHARED, mmap.PROT_READ)
    try:
        st = os.stat(path)
        found = mapped_ranges(str(path), (st.st_dev, st.st_ino + 1))
        assert len(found) == 1 and found[0][1] == _PAGE, found
    finally:
        mapped.close()


def test_a_snapshot_opened_before_the_take_over_stops_counting_too(
    user_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taking the releases over is asked at each read, not when a snapshot is opened:
    one opened before (a long-lived reader of a caller that sets its budget later)
    went on releasing the map at every look."""
    with user_repo.transaction() as txn:
        ids = [txn.write_file(FileHeader(0, 0, REG), b"file %d" % n) for n in range(6000)]
    data_file = user_repo.path / "index" / "data.mdb"
    monkeypatch.setattr(index_env, "COUNT_PER_LOOK", 1)
    monkeypatch.setattr(index_env, "MAPPED_BUDGET", 0)
    with user_repo.index.reader() as reader:
        user_repo.take_over_index_page_releases()
        assert sum(1 for _ in reader.iter_objects()) == 6000
        everything = _resident_kib(data_file)
        assert all(reader.has_object(i) for i in ids)
        kept = _resident_kib(data_file)
    assert everything >= 256, f"only {everything} KiB of the index mapped: too small a test"
    assert kept > everything // 2, f"{kept} of {everything} KiB kept by point reads"
