"""Attack 9: the scan's prefetcher (fs/prefetch.py) against a hostile or hanging tree.

A cold scan is simulated as in test_scan_prefetch.py: a block counter that grows at
every look starts the threads at once."""

from __future__ import annotations

import itertools
import os
import stat
import threading
import time
from pathlib import Path

import pytest

import fs.prefetch
import fs.prefetch_threads
from fs.options import ContentOptions
from fs.prefetch_threads import PrefetchThreads
from store import Repository
from tests.fs.prefetching import reads_from_the_disk
from tests.helpers import commit_dir, open_fds

_Path = tuple[bytes, ...]


def _cold(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = itertools.count()
    reads_from_the_disk(monkeypatch, lambda: next(blocks))


def _spy(
    monkeypatch: pytest.MonkeyPatch, hold: _Path | None = None
) -> tuple[list[_Path], threading.Event]:
    """The directories the prefetcher lists; listing ``hold`` waits for the event (a
    directory on a mount that hangs)."""
    listed: list[_Path] = []
    release = threading.Event()
    real = PrefetchThreads._list

    def spy(self: PrefetchThreads, path: _Path, subdirs: list[_Path]) -> None:
        listed.append(path)
        if path == hold:
            release.wait(60)
        real(self, path, subdirs)

    monkeypatch.setattr(PrefetchThreads, "_list", spy)
    return listed, release


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sapwood-prefetch"]


def test_a_skipped_path_is_never_listed_ahead(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 1: the commit skips /mnt (a mount that hangs, /proc of a sysroot); the
    prefetcher listed it anyway, and everything below it."""
    source = tmp_path / "src"
    for name in ("keep", "mnt"):
        (source / name / "deeper").mkdir(parents=True)
        (source / name / "deeper" / "file").write_bytes(name.encode())
    _cold(monkeypatch)
    listed, _ = _spy(monkeypatch)
    commit_dir(user_repo, source, options=ContentOptions(skip=frozenset({b"/mnt"})))
    assert (b"keep", b"deeper") in listed  # it did run
    assert not [path for path in listed if path[:1] == (b"mnt",)]


def test_a_thread_held_by_its_filesystem_does_not_hold_the_commit(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 2: stop() joined every thread without a limit, so one listing a
    directory of a mount that hangs (or a huge cold one) held the commit, its error and
    its Ctrl-C cleanup, until that listing ended."""
    source = tmp_path / "src"
    for name in ("a", "b", "c"):
        (source / name / "sub").mkdir(parents=True)
        (source / name / "sub" / "file").write_bytes(name.encode())
    before = open_fds()
    _cold(monkeypatch)
    _, release = _spy(monkeypatch, hold=(b"b",))
    started = time.monotonic()
    try:
        commit_dir(user_repo, source)
        took = time.monotonic() - started
    finally:
        release.set()
    assert took < fs.prefetch._STOP_WAIT + 5
    deadline = time.monotonic() + 10
    while _prefetch_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _prefetch_threads()
    assert open_fds() == before  # the last thread closed its fd


def test_a_stopped_thread_leaves_a_huge_directory_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 2: a thread stops at the next entry, not at the end of its directory
    (listing with scandir, where libc has no getdents64: test_prefetch_attacks.py has
    getdents64's batches)."""
    monkeypatch.setattr(fs.prefetch_threads, "libc_getdents", lambda: None)
    for number in range(300):
        (tmp_path / f"f{number}").write_bytes(b"")
    root = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    prefetcher = PrefetchThreads(root, frozenset(), 8, 1)
    prefetcher._own_fd = os.dup(root)
    prefetcher._stopping = True
    seen: list[str] = []
    real_scandir = os.scandir

    class Listing:
        def __init__(self, fd: int) -> None:
            self._inner = real_scandir(fd)

        def __enter__(self) -> Listing:
            return self

        def __exit__(self, *_: object) -> None:
            self._inner.close()

        def __iter__(self) -> Listing:
            return self

        def __next__(self) -> os.DirEntry[str]:
            entry = next(self._inner)
            seen.append(entry.name)
            return entry

    monkeypatch.setattr("fs.prefetch.os.scandir", Listing)
    try:
        prefetcher._list((), [])
    finally:
        monkeypatch.undo()
        prefetcher.stop(1.0)
        os.close(root)
    assert len(seen) <= 1


def test_a_failure_in_a_thread_is_no_traceback_and_the_commit_goes_on(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 5: an error _list did not expect (out of fds in _open's dup of the root,
    EMFILE) ended its thread through threading.excepthook: a traceback on the CLI's
    stderr, and one thread fewer."""
    source = tmp_path / "src"
    for name in ("a", "b"):
        (source / name / "sub").mkdir(parents=True)
        (source / name / "sub" / "file").write_bytes(name.encode())
    warm = commit_dir(user_repo, source, "warm")
    hooked: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", hooked.append)
    _cold(monkeypatch)
    listed: list[_Path] = []

    def failing_open(self: PrefetchThreads, path: _Path) -> int | None:
        listed.append(path)
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(PrefetchThreads, "_open", failing_open)
    cold = commit_dir(user_repo, source, "cold")
    assert listed  # the threads ran
    assert user_repo.read_commit(cold).tree == user_repo.read_commit(warm).tree
    assert not hooked


def test_one_directory_of_mixed_farm_files_records_what_each_holds(tmp_path: Path) -> None:
    """Item 6 (no defect): the directory's candidates are looked up together
    (Snapshot.objects_for_inodes), so a file that is not its object, or not any, among
    ones that are must not shift the answers of the others. Each file's recorded
    object holds the bytes the file holds, and its bits."""
    from fs.checkout import CheckoutOptions, checkout
    from store import RepoMode, lookup

    repo = Repository.init(tmp_path / "repo", RepoMode.BARE_USER)
    src = tmp_path / "src" / "d"
    src.mkdir(parents=True)
    for number in range(10):
        (src / f"f{number}").write_bytes(b"content %d\n" % number * (number + 1))
    (src / "sl").symlink_to("f0")
    first = commit_dir(repo, src.parent, "first")
    farm = tmp_path / "farm"
    checkout(repo, first, farm, CheckoutOptions(user_mode=True, require_hardlinks=True))
    d = farm / "d"
    (d / "f1").chmod(0o700)  # the object's inode: read as it shows
    (d / "x").write_bytes(b"content 3\n" * 4)  # f3's size, a pair inside the tree, mtime 0
    os.link(d / "x", farm / "pair")
    os.utime(d / "x", ns=(0, 0))
    os.rename(d / "x", d / "f3")
    os.unlink(d / "f5")
    os.link(d / "f6", d / "f5")  # another object: it is that object
    sl_id = lookup(repo, first, "d/sl").file
    assert sl_id is not None
    os.link(repo.object_path(sl_id), d / "planted")  # a symlink object: a regular file here
    again = commit_dir(repo, farm, "again")
    for path in sorted(d.iterdir()):
        found = lookup(repo, again, f"d/{path.name}").file
        assert found is not None
        header, _ = repo.read_file_header(found)
        shown = os.lstat(path)
        if stat.S_ISLNK(shown.st_mode):
            assert header.symlink_target == os.readlink(path).encode()
            continue
        assert repo.read_file(found) == path.read_bytes(), path.name
        assert stat.S_IMODE(header.mode) == stat.S_IMODE(shown.st_mode), path.name
    repo.close()


def test_a_hostile_deep_chain_is_not_listed_below_what_a_commit_holds(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 7: each directory is opened from the root a name at a time, so a chain
    N deep cost the threads N*N/2 opens (100,000 deep: 5e9, holding the interpreter
    against the scan until it refuses the tree for its depth). Nothing deeper than
    MAX_TREE_DEPTH is ever committed; the threads stop there (here: 3)."""
    source = tmp_path / "src"
    deep = source.joinpath(*["d"] * 8)
    deep.mkdir(parents=True)
    (deep / "file").write_bytes(b"deep\n")
    _cold(monkeypatch)
    listed, _ = _spy(monkeypatch)
    monkeypatch.setattr(fs.prefetch, "MAX_TREE_DEPTH", 3)
    commit_dir(user_repo, source)
    assert listed
    assert max(map(len, listed)) == 3 + 1
