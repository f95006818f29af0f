"""The scan's prefetcher (fs/prefetch.py): it lists a tree ahead of the scan once the
scan's listings read the disk, stays inside the tree, and changes nothing recorded.

Caches are not dropped here (that would slow everything else on the machine): the
disk reads that start it are simulated by a counter of blocks that grows at every
look, and the cold speed-up is measured by benchmarks/roundtrip_bench.py."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

import fs.getdents
import fs.prefetch
import fs.prefetch_child
import fs.prefetch_threads
from fs.prefetch import Prefetcher
from fs.prefetch_threads import PrefetchThreads
from store import Repository
from tests.fs.prefetching import (
    lists_in_a_child,
    prefetcher_listings,
    reads_from_the_disk,
    spied,
    spy_child_command,
    stopped_once_the_threads_end,
)
from tests.helpers import commit_dir, open_fds

_T = TypeVar("_T")


def _tree(base: Path) -> Path:
    """src/ with nested directories and files, and a symlink to a directory outside."""
    source = base / "src"
    for top in range(3):
        for sub in range(4):
            leaf = source / f"d{top}" / f"s{sub}"
            leaf.mkdir(parents=True)
            (leaf / "file").write_bytes(b"%d %d\n" % (top, sub))
    (base / "outside" / "deeper").mkdir(parents=True)
    (source / "d0" / "away").symlink_to(base / "outside")
    return source


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sapwood-prefetch"]


def test_a_cold_scan_lists_the_tree_ahead_and_records_the_same(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _tree(tmp_path)
    warm = commit_dir(user_repo, source, "warm")
    listed = prefetcher_listings(monkeypatch)
    assert not listed  # a warm tree (nothing read from the disk): no thread started
    before = open_fds()
    blocks = itertools.count()
    reads_from_the_disk(monkeypatch, lambda: next(blocks))  # every look reads
    stopped_once_the_threads_end(monkeypatch)
    cold = commit_dir(user_repo, source, "cold")
    trees = [user_repo.read_commit(commit) for commit in (warm, cold)]
    assert (trees[0].tree, trees[0].meta) == (trees[1].tree, trees[1].meta)
    expected = _directories(source)
    assert set(listed) == expected  # the whole tree, and nothing through the symlink
    assert len(listed) == len(expected)  # each directory once
    assert not _prefetch_threads()
    assert open_fds() == before


def test_it_stays_a_bounded_number_of_directories_ahead(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the bound, two threads list these 61 directories long before the scan
    has entered a few of them. The scan is held before each listing until the threads
    have gone as far ahead as they may (or listed everything): what they list then
    depends on the bound alone, not on which of them the machine runs first (the
    threads often lagged behind the scan, which ended and stopped them with 26 of the
    61 listed: attack9.md 8)."""
    source = tmp_path / "src"
    for top in range(6):
        for sub in range(9):
            (source / f"d{top}" / f"s{sub}").mkdir(parents=True)
            (source / f"d{top}" / f"s{sub}" / "file").write_bytes(b"%d %d\n" % (top, sub))
    blocks = itertools.count()
    reads_from_the_disk(monkeypatch, lambda: next(blocks))
    monkeypatch.setattr(fs.prefetch_threads, "_AHEAD", 2)
    monkeypatch.setattr(fs.prefetch, "_THREADS", 2)
    leads: list[int] = []
    listed: list[tuple[bytes, ...]] = []
    real_list, real_listing = PrefetchThreads._list, Prefetcher.listing

    def spy(
        self: PrefetchThreads, path: tuple[bytes, ...], subdirs: list[tuple[bytes, ...]]
    ) -> None:
        with self._lock:
            leads.append(self._listed + self._busy - self._entered)
            listed.append(path)
        real_list(self, path, subdirs)

    def as_far_ahead_as_allowed(threads: PrefetchThreads) -> bool:
        ahead = threads._listed - threads._entered >= fs.prefetch_threads._AHEAD
        return threads._busy == 0 and (ahead or not threads._stack)

    def held_listing(self: Prefetcher, list_directory: Callable[[], _T]) -> _T:
        if (threads := self._threads) is not None:
            with threads._lock:
                assert threads._lock.wait_for(lambda: as_far_ahead_as_allowed(threads), 30)
        return real_listing(self, list_directory)

    monkeypatch.setattr(PrefetchThreads, "_list", spy)
    monkeypatch.setattr(Prefetcher, "listing", held_listing)
    commit_dir(user_repo, source)
    assert sorted(listed) == sorted(set(listed)) and len(listed) == 1 + 6 + 54
    assert 2 <= max(leads) <= 2 + 2  # _AHEAD reached, and a directory in each thread


def test_a_directory_is_opened_a_name_at_a_time_never_through_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    root = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    prefetcher = PrefetchThreads(root, frozenset(), 8, 1)
    prefetcher._own_fd = os.dup(root)
    try:
        opened = prefetcher._open((b"real", b"sub"))
        assert opened is not None
        assert os.fstat(opened).st_ino == os.stat(tmp_path / "real" / "sub").st_ino
        os.close(opened)
        assert prefetcher._open((b"link",)) is None
        assert prefetcher._open((b"link", b"sub")) is None
        assert prefetcher._open((b"gone",)) is None
    finally:
        prefetcher.stop(1.0)
        os.close(root)


def _subdirectories(prefetcher: PrefetchThreads, directory: Path) -> list[bytes]:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return sorted(prefetcher._entries(fd))
    finally:
        os.close(fd)


@pytest.mark.parametrize("getdents", [True, False], ids=["getdents64", "scandir"])
def test_the_threads_read_a_directory_a_batch_at_a_time_and_take_only_its_subdirectories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, getdents: bool
) -> None:
    """getdents64 through ctypes (one release of the interpreter a batch, not one an
    entry), parsed by hand: several batches for a long listing, names of any length,
    "." and ".." left out, a symlink to a directory never taken for one; without
    getdents64 (another libc), scandir gives the same."""
    monkeypatch.setattr(fs.getdents, "_BATCH", 1024)  # a few dozen entries a batch
    if not getdents:
        monkeypatch.setattr(fs.prefetch_threads, "libc_getdents", lambda: None)
    elif fs.getdents.libc_getdents() is None:
        pytest.skip("this libc has no getdents64")
    directory = tmp_path / "dir"
    directory.mkdir()
    names = [b"d%03d-" % n + b"x" * (n % 200) for n in range(300)]
    for name in names:
        os.mkdir(os.fsencode(directory) + b"/" + name)
    for n in range(300):
        (directory / f"f{n}").write_bytes(b"")
    (directory / "link").symlink_to(directory / names[0].decode())
    root = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        threads = PrefetchThreads(root, frozenset(), 8, 1)
        assert _subdirectories(threads, directory) == sorted(names)
    finally:
        os.close(root)


def _child_listing(
    root: Path, skip: list[bytes], depth: int = 64, command: list[str] | None = None
) -> tuple[list[tuple[bytes, ...]], list[str] | None]:
    """Run the child lister (``command``, fs/prefetch_child.py's main with a spy by
    default) as the scan would on ``root``: the directories it listed, and the modules
    beyond the standard library it had loaded, once its threads have all ended."""
    if command is None:
        command = spy_child_command(root.parent / "spy.py", "/dev/stdout")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        argv = [*command, "2", str(depth), "0", str(fd)]
        child = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(fd,)
        )
    finally:
        os.close(fd)
    assert child.stdout is not None and child.stdin is not None
    paths = b"\0".join(skip)
    child.stdin.write(len(paths).to_bytes(8, "big") + paths)  # as send_skipped does
    child.stdin.flush()
    lines: list[bytes] = []
    try:
        while not lines or not lines[-1].startswith(b"ended"):
            lines.append(child.stdout.readline())
            assert lines[-1], lines  # the child ended before its threads did
        return spied(lines)
    finally:
        child.stdin.close()
        assert child.wait(10) == 0


def _directories(source: Path, *left_out: str) -> set[tuple[bytes, ...]]:
    """The directories of ``source`` but symlinks and ``left_out`` with all below them."""
    found = {()} | {
        tuple(os.fsencode(part) for part in path.relative_to(source).parts)
        for path in source.rglob("*")
        if path.is_dir() and not path.is_symlink()
    }
    out = {tuple(os.fsencode(part) for part in Path(path).parts) for path in left_out}
    return {path for path in found if not any(path[: len(o)] == o for o in out)}


def test_the_child_lists_the_tree_but_skipped_paths_symlinks_and_what_is_too_deep(
    tmp_path: Path,
) -> None:
    """The child process keeps the threads' rules: each directory listed once, none
    skipped (d0 with all below it), none through a symlink (d0/away and d1/escape lead
    out of the tree), none below MAX_TREE_DEPTH; skipped paths of any size (4.6 MB
    would not fit its command line)."""
    source = _tree(tmp_path)
    (source / "d1" / "escape").symlink_to(tmp_path / "outside")
    cases = [
        ([b"/d0"], 64, _directories(source, "d0")),
        ([], 64, _directories(source)),
        ([], 0, {(), (b"d0",), (b"d1",), (b"d2",)}),  # listed, nothing below
    ]
    many = [b"/d1/%s\n %08d" % (b"x" * 100, n) for n in range(40_000)]
    cases.append(([b"/d0", *many, b"/d2/s1"], 64, _directories(source, "d0", "d2/s1")))
    for skip, depth, expected in cases:
        listed, _ = _child_listing(source, skip, depth)
        assert sorted(listed) == sorted(expected)


def test_the_child_loads_the_standard_library_and_its_own_modules_only(tmp_path: Path) -> None:
    """The child runs python -I -S (no site-packages) and must not import store: it
    takes MAX_TREE_DEPTH from its command line (review12 8)."""
    _, loaded = _child_listing(_tree(tmp_path), [])
    assert loaded == ["__main__", "fs", "fs.getdents", "fs.prefetch_child", "fs.prefetch_threads"]


def test_the_child_as_the_scan_runs_it_starts_its_threads_and_ends_with_its_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fs/prefetch_child.py run as a script (python -I -S: it finds its package by its
    own path) reads the skipped paths and starts listing: the duplicate of the root its
    threads open appears among its fds; once its stdin ends it exits, status 0."""
    source = _tree(tmp_path)
    lists_in_a_child(monkeypatch)
    command = fs.prefetch._child_command()
    assert command == [sys.executable, "-I", "-S", fs.prefetch_child.__file__]
    fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    try:
        child = subprocess.Popen(
            [*command, "2", "64", "0", str(fd)],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(fd,),
        )
    finally:
        os.close(fd)
    assert child.stdin is not None and child.stderr is not None
    child.stdin.write(bytes(8))  # no skipped paths
    child.stdin.flush()

    def roots() -> int:
        """The child's fds on the root; an fd closed between the listing and its
        readlink (the threads open and close one a directory) is not one: it used to
        make the whole count 0, a failure once in a while under load."""
        fds = f"/proc/{child.pid}/fd"
        found = 0
        with contextlib.suppress(OSError):
            for n in os.listdir(fds):
                with contextlib.suppress(OSError):
                    found += os.readlink(f"{fds}/{n}") == str(source)
        return found

    deadline = time.monotonic() + 30
    seen = roots()
    while seen < 2 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
        seen = roots()
    try:  # the inherited fd, the threads' duplicate (and one listing the root, briefly)
        assert seen >= 2, child.stderr.read() if child.poll() is not None else b""
    finally:
        child.stdin.close()
        assert child.wait(10) == 0
    assert child.stderr.read() == b""


def test_a_cold_scan_starts_the_child_and_stop_ends_it(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started once the scan reads the disk (simulated), told of the scan's progress,
    and killed and reaped when the walk ends: nothing left running, no fd left open;
    the commit is the same."""
    lists_in_a_child(monkeypatch)
    source = _tree(tmp_path)
    warm = commit_dir(user_repo, source, "warm")
    children: list[subprocess.Popen[bytes]] = []
    real_spawn = Prefetcher._spawn

    def spawn(self: Prefetcher, command: list[str]) -> bool:
        started = real_spawn(self, command)
        assert self._child is not None
        children.append(self._child)
        return started

    monkeypatch.setattr(Prefetcher, "_spawn", spawn)
    before = open_fds()
    blocks = itertools.count()
    reads_from_the_disk(monkeypatch, lambda: next(blocks))
    cold = commit_dir(user_repo, source, "cold")
    assert len(children) == 1 and children[0].returncode is not None
    command = children[0].args
    assert isinstance(command, list)
    assert command[:4] == [sys.executable, "-I", "-S", fs.prefetch_child.__file__]
    assert open_fds() == before
    trees = [user_repo.read_commit(commit) for commit in (warm, cold)]
    assert (trees[0].tree, trees[0].meta) == (trees[1].tree, trees[1].meta)
    assert not _prefetch_threads()


def test_a_child_gone_early_neither_holds_nor_kills_the_scan(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child killed as soon as it started (an OOM kill, say), SIGPIPE at its
    default (a program using the library may set it so): the scan goes on telling it of
    each directory, and the commit is made as if it had never been started."""
    lists_in_a_child(monkeypatch)
    source = _tree(tmp_path)
    warm = commit_dir(user_repo, source, "warm")
    real_spawn = Prefetcher._spawn

    def spawn_and_kill(self: Prefetcher, command: list[str]) -> bool:
        started = real_spawn(self, command)
        assert self._child is not None
        self._child.kill()
        self._child.wait()
        return started

    monkeypatch.setattr(Prefetcher, "_spawn", spawn_and_kill)
    blocks = itertools.count()
    reads_from_the_disk(monkeypatch, lambda: next(blocks))
    previous = signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        cold = commit_dir(user_repo, source, "cold")
    finally:
        signal.signal(signal.SIGPIPE, previous)
    trees = [user_repo.read_commit(commit) for commit in (warm, cold)]
    assert (trees[0].tree, trees[0].meta) == (trees[1].tree, trees[1].meta)


def _drain(sock: socket.socket) -> int:
    """The bytes waiting on ``sock``, read without waiting."""
    got = 0
    with contextlib.suppress(BlockingIOError):
        while more := sock.recv(1 << 16, socket.MSG_DONTWAIT):
            got += len(more)
    return got


def test_progress_the_socket_cannot_take_yet_is_sent_later_never_dropped() -> None:
    """The child does not read while the scan enters 100,000 directories (descheduled,
    say): the socket takes a few hundred sends, and the rest is carried over, so once
    the child reads again it learns every directory (review12 2: they were dropped, and
    the child lost count for good)."""
    ours, theirs = socket.socketpair()
    prefetcher = Prefetcher(-1)
    prefetcher._started, prefetcher._progress = True, ours
    entered = 100_000
    try:
        for _ in range(entered):
            prefetcher.listing(lambda: None)
        told = _drain(theirs)
        assert told < entered  # the socket was full: some were not sent at once
        assert prefetcher._unsent == entered - told >= fs.prefetch_child.TELL_EVERY
        for _ in range(3):  # the next directories carry the rest
            prefetcher.listing(lambda: None)
            told += _drain(theirs)
        assert told + prefetcher._unsent == entered + 3  # fewer than a batch wait
        assert prefetcher._unsent < fs.prefetch_child.TELL_EVERY
    finally:
        ours.close()
        theirs.close()


def test_the_child_is_told_of_directories_in_batches() -> None:
    """A send (and a wake-up of the child) every TELL_EVERY directories, not one each:
    nothing is lost, the scan is at most TELL_EVERY - 1 directories further than told."""
    ours, theirs = socket.socketpair()
    prefetcher = Prefetcher(-1)
    prefetcher._started, prefetcher._progress = True, ours
    every = fs.prefetch_child.TELL_EVERY
    sends: list[int] = []
    try:
        for entered in range(1, 3 * every + 6):
            prefetcher.listing(lambda: None)
            if told := _drain(theirs):
                sends.append(entered)
                assert told == every
            assert 0 <= entered - every * len(sends) < every
        assert sends == [every, 2 * every, 3 * every]
    finally:
        ours.close()
        theirs.close()


def test_one_inode_is_lstated_a_window_of_256_counted_from_inode_1_or_every_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inodes 1-256 are one window (16 inode-table blocks, half of ext4's readahead:
    review12 3), 257 starts the next: of a batch of files with inodes 1-1024, 4 are
    lstat'ed, the first of each window, and directories are yielded, never lstat'ed; in
    the child (every_inode), all 1,024 are."""

    def entry(inode: int, kind: int, name: bytes) -> bytes:
        return (fs.getdents.DIRENT.pack(inode, 0, 32, kind) + name).ljust(32, b"\0")

    batch = b"".join(entry(inode, 8, b"f%07d" % inode) for inode in range(1, 1025))
    batch += entry(5000, fs.getdents.DT_DIR, b"subdir")
    looked: list[bytes] = []
    monkeypatch.setattr(os, "lstat", lambda name, dir_fd: looked.append(name))
    threads = PrefetchThreads(-1, frozenset(), 8, 1)
    assert list(threads._parsed(-1, batch)) == [b"subdir"]
    assert looked == [b"f%07d" % inode for inode in (1, 257, 513, 769)]
    looked.clear()  # the child's threads: every entry, so the scan's core makes no inode
    threads = PrefetchThreads(-1, frozenset(), 8, 1, every_inode=True)
    assert list(threads._parsed(-1, batch)) == [b"subdir"]
    assert looked == [b"f%07d" % inode for inode in range(1, 1025)]


def test_store_failing_to_import_is_an_error_in_the_scans_process() -> None:
    """The scan's side imports store whatever runs it (only the child, which has no
    store, takes MAX_TREE_DEPTH from its command line): a failed import of store raises,
    never leaves a depth of 0 that lists nothing below the root's children (review12 8)."""
    code = "import sys; sys.modules['store'] = None; import fs.prefetch"
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(fs.prefetch.__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0 and "ModuleNotFoundError: import of store halted" in run.stderr
