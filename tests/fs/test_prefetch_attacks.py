"""Hostile trees and hostile getdents64 batches for the scan's prefetcher (fs/prefetch.py,
attack16): it never reads outside the tree, never changes what a commit records,
ends with the commit (no thread, child or fd left), and its hand-made parser of
linux_dirent64 batches ends on any bytes.

The prefetcher starts only once the scan's listings read the disk; here that is
simulated (a block counter that grows at every look), as in test_scan_prefetch.py.
tests/fs/conftest.py lists in threads of this process; the child's tests switch the
child back on (tests/fs/prefetching.py), or run it with a spy."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import fs.getdents
import fs.prefetch
from fs.options import ContentOptions
from fs.prefetch import Prefetcher
from fs.prefetch_threads import PrefetchThreads
from store import MAX_TREE_DEPTH, Repository
from store.errors import SapwoodError
from tests.fs.prefetching import (
    lists_in_a_child,
    prefetcher_listings,
    reads_from_the_disk,
    spied,
    spy_child_command,
    stopped_once_the_threads_end,
)
from tests.helpers import commit_dir, open_fds

_Path = tuple[bytes, ...]


def _entry(inode: int, reclen: int, kind: int, name: bytes) -> bytes:
    return fs.getdents.DIRENT.pack(inode, 0, reclen, kind) + name


def _cold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every listing of the scan reads the disk: the prefetcher starts at the second."""
    blocks = itertools.count()
    reads_from_the_disk(monkeypatch, lambda: next(blocks))


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sapwood-prefetch"]


def _children() -> set[int]:
    me = os.getpid()
    found = set()
    for task in os.listdir(f"/proc/{me}/task"):
        with open(f"/proc/{me}/task/{task}/children") as listing:
            found |= {int(pid) for pid in listing.read().split()}
    return found


# ----- the parser of getdents64 batches --------------------------------------------------


def test_a_name_without_its_nul_raises_rather_than_reads_past() -> None:
    """The thread catches it (_work's except): the directory is skipped, nothing more."""
    with pytest.raises(ValueError):
        list(fs.getdents.dirents(_entry(5, 24, 4, b"abcde")))


def test_a_record_length_past_the_batch_ends_it() -> None:
    assert list(fs.getdents.dirents(_entry(5, 4000, 4, b"ab\0"))) == [(5, 4, b"ab")]
    with pytest.raises(Exception):  # noqa: B017 (struct.error: a few bytes left over)
        list(fs.getdents.dirents(_entry(5, 24, 4, b"ab\0") + b"x" * 4))


@pytest.mark.parametrize("reclen", [0, 5], ids=["zero", "shorter-than-header"])
def test_a_record_length_of_zero_does_not_loop_forever(reclen: int) -> None:
    """d_reclen 0 (or one shorter than the header, landing on zeros) never moves the
    parser on: it yields the same entry forever, and _entries checks _stopping only
    between batches, so stop() cannot end the thread (a DT_DIR entry grows its
    subdirs list without bound). The kernel never writes one; this is the parser's
    own defence, which the brief asks about."""
    batch = _entry(5, reclen, 4, b"ab\0") + b"\0" * 24
    got = list(itertools.islice(fs.getdents.dirents(batch), 10_000))
    assert len(got) < 10_000


def test_random_batches_end_in_as_many_entries_as_they_have_bytes() -> None:
    """5,000 batches of random bytes (with records of random lengths, zeros among
    them): each parse ends, yields fewer entries than the batch has bytes / 20, and
    raises nothing but ValueError or struct.error (which _work catches)."""
    import random
    import struct

    rng = random.Random(16)
    for _ in range(5000):
        batch = bytearray()
        for _ in range(rng.randrange(1, 6)):
            name = bytes(rng.randrange(1, 256) for _ in range(rng.randrange(0, 12)))
            length = rng.choice([0, 1, 19, 20, 24, rng.randrange(0, 300)])
            batch += _entry(rng.randrange(1 << 20), length, rng.choice([0, 4, 8]), name)
            if rng.random() < 0.7:
                batch += b"\0" * rng.randrange(0, 8)
        try:
            got = list(itertools.islice(fs.getdents.dirents(bytes(batch)), len(batch)))
        except (ValueError, struct.error):
            continue
        assert len(got) <= len(batch) // 20


# ----- hostile trees, committed cold and warm ---------------------------------------------


def _hostile_tree(base: Path) -> tuple[Path, set[_Path]]:
    """Names of 255 bytes, with newlines, not UTF-8, a FIFO, symlinks to / and /proc:
    the tree and the directories in it (what the prefetcher may list)."""
    source = base / "src"
    source.mkdir()
    root = os.fsencode(source)
    names = [b"x" * 255, b"new\nline", b"\xff\xfe\x80bad", b"-", b" lead", b"\n"]
    dirs: set[_Path] = {()}
    for top in names:
        os.mkdir(root + b"/" + top)
        dirs.add((top,))
        for sub in names[:3]:
            os.mkdir(root + b"/" + top + b"/" + sub)
            dirs.add((top, sub))
            with open(root + b"/" + top + b"/" + sub + b"/" + b"f" * 255, "wb") as file:
                file.write(top + sub)
    os.mkfifo(root + b"/" + names[1] + b"/fifo\n")
    os.symlink("/", root + b"/" + names[0] + b"/to-root")
    os.symlink("/proc", root + b"/to-proc")
    os.symlink("/proc/self/cwd", root + b"/" + names[2] + b"/cwd")
    return source, dirs


def _stopped_once_the_child_ends(monkeypatch: pytest.MonkeyPatch, noted: Path) -> None:
    """Prefetcher.stop waits (30 s at most) for a spied child's threads to end first
    (spy_child_command): the scan of a small tree ends before the child has started."""
    real_stop = Prefetcher.stop

    def stop(self: Prefetcher) -> None:
        deadline = time.monotonic() + 30
        if self._child is not None:
            while b"\nended" not in b"\n" + noted.read_bytes():
                assert time.monotonic() < deadline and self._child.poll() is None
                time.sleep(0.01)
        real_stop(self)

    monkeypatch.setattr(Prefetcher, "stop", stop)


@pytest.mark.parametrize("in_child", [False, True], ids=["threads", "child"])
def test_hostile_names_and_links_are_listed_inside_the_tree_and_commit_the_same(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_child: bool
) -> None:
    source, dirs = _hostile_tree(tmp_path)
    options = ContentOptions(skip_special=True)
    warm = commit_dir(user_repo, source, "warm", options=options)
    listed = prefetcher_listings(monkeypatch)
    noted = tmp_path / "noted"
    if in_child:  # a spy in the child notes what it lists; the scan waits for its end
        noted.write_bytes(b"")
        command = spy_child_command(tmp_path / "spy.py", str(noted))
        monkeypatch.setattr(fs.prefetch, "_child_command", lambda: command)
        _stopped_once_the_child_ends(monkeypatch, noted)
    else:  # the threads of a small tree lag behind the scan, which would stop them
        stopped_once_the_threads_end(monkeypatch)
    fds_before = open_fds()
    children_before = _children()
    _cold(monkeypatch)
    cold = commit_dir(user_repo, source, "cold", options=options)
    trees = [user_repo.read_commit(commit) for commit in (warm, cold)]
    assert (trees[0].tree, trees[0].meta) == (trees[1].tree, trees[1].meta)
    if in_child:
        assert not listed  # nothing in this process
        listed, _ = spied(noted.read_bytes().splitlines())
    assert set(listed) == dirs and len(listed) == len(dirs)
    assert not _prefetch_threads()
    assert _children() == children_before
    assert open_fds() == fds_before


def _opened_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What every directory the prefetcher opens is, as /proc says (a list that grows)."""
    seen: list[str] = []
    real = PrefetchThreads._open

    def spy(self: PrefetchThreads, path: _Path) -> int | None:
        fd = real(self, path)
        if fd is not None:
            seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        return fd

    monkeypatch.setattr(PrefetchThreads, "_open", spy)
    return seen


@pytest.mark.parametrize("swap", ["root", "proc", "removed", "fifo"])
def test_a_directory_swapped_while_the_scan_goes_is_never_listed_through(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: str
) -> None:
    """Just before the prefetcher opens a directory, it is replaced by a symlink to /
    or to /proc, removed, or replaced by a FIFO: every directory it opens is still in
    the tree, and the commit ends (made, or refused with a SapwoodError)."""
    source = tmp_path / "src"
    for top in "abcd":
        for sub in range(3):
            (source / top / f"s{sub}" / "deeper").mkdir(parents=True)
            (source / top / f"s{sub}" / "file").write_bytes(top.encode())
    opened = _opened_paths(monkeypatch)
    real = PrefetchThreads._open
    swapped: list[_Path] = []

    def swapping(self: PrefetchThreads, path: _Path) -> int | None:
        if len(path) == 2 and not swapped:
            swapped.append(path)
            victim = source / os.fsdecode(path[0]) / os.fsdecode(path[1])
            shutil.rmtree(victim)
            if swap == "root":
                victim.symlink_to("/")
            elif swap == "proc":
                victim.symlink_to("/proc")
            elif swap == "fifo":
                os.mkfifo(victim)
        return real(self, path)

    monkeypatch.setattr(PrefetchThreads, "_open", swapping)
    _cold(monkeypatch)
    with contextlib.suppress(SapwoodError):
        commit_dir(user_repo, source, options=ContentOptions(skip_special=True))
    assert swapped
    inside = os.path.realpath(source)
    assert opened and all(path == inside or path.startswith(inside + "/") for path in opened)
    assert not _prefetch_threads()


def test_a_chain_a_thousand_deep_is_refused_and_listed_no_deeper_than_a_commit_nests(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(1000):
            os.mkdir("d", dir_fd=fd)
            deeper = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
    finally:
        os.close(fd)
    listed = prefetcher_listings(monkeypatch)
    _cold(monkeypatch)
    try:
        with pytest.raises(SapwoodError, match="deep"):
            commit_dir(user_repo, source)
    finally:
        subprocess.run(["rm", "-rf", str(source)], check=True)  # pytest's rmtree recurses
    assert max(len(path) for path in listed) <= MAX_TREE_DEPTH + 1
    assert not _prefetch_threads()


def _big_directory(source: Path, count: int) -> None:
    big = source / "big"
    big.mkdir(parents=True)
    for n in range(count):
        (big / f"{n:06d}").write_bytes(b"")
    (big / "zz-sub").mkdir()
    (big / "zz-sub" / "file").write_bytes(b"below the big one")


@pytest.mark.skipif(not os.environ.get("SAPWOOD_LONG"), reason="SAPWOOD_LONG=1: 100,000 files")
def test_a_directory_of_100000_entries_commits_the_same_cold(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "src"
    (source / "first").mkdir(parents=True)
    _big_directory(source, 100_000)
    warm = commit_dir(user_repo, source, "warm")
    listed = prefetcher_listings(monkeypatch)
    _cold(monkeypatch)
    cold = commit_dir(user_repo, source, "cold")
    assert user_repo.read_commit(warm).tree == user_repo.read_commit(cold).tree
    assert (b"big", b"zz-sub") in listed
    assert not _prefetch_threads()


def test_a_huge_directory_is_not_listed_to_its_end_once_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop() during a listing of a large directory: the thread ends at its next batch.
    Listed in a thread of its own: _Getdents keeps a buffer a thread, made at _BATCH's
    size of the time, and a smaller one left in this thread would be overrun by a
    later test's larger batch (attack16 4)."""
    _big_directory(tmp_path / "src", 5000)
    monkeypatch.setattr(fs.getdents, "_BATCH", 256)  # ~10 entries a batch
    root = os.open(tmp_path / "src", os.O_RDONLY | os.O_DIRECTORY)
    counted: list[int] = []

    def count() -> None:
        prefetcher = PrefetchThreads(root, frozenset(), MAX_TREE_DEPTH, 1)
        fd = os.open(tmp_path / "src" / "big", os.O_RDONLY | os.O_DIRECTORY)
        try:
            listing: Iterator[bytes] = prefetcher._entries(fd)
            prefetcher._stopping = True
            counted.append(sum(1 for _ in listing))
        finally:
            os.close(fd)

    try:
        thread = threading.Thread(target=count)
        thread.start()
        thread.join(30)
        assert counted == [0]
    finally:
        os.close(root)


def test_the_getdents_buffer_is_never_smaller_than_the_length_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Getdents.read passes _BATCH as the buffer's length, but the buffer is the one
    made for this thread at _BATCH's size of the time: once _BATCH grows (tests set it
    small, then it is put back), the kernel writes 32 KiB into a smaller buffer (a
    heap overrun: a script doing so segfaults). Checked with a stand-in for the libc
    call that only compares the sizes (no overrun here), in a thread of its own."""
    import ctypes

    if fs.getdents.libc_getdents() is None:
        pytest.skip("this libc has no getdents64")
    calls: list[tuple[int, int]] = []

    def sizes(fd: int, buffer: ctypes.Array[ctypes.c_char], length: int) -> int:
        calls.append((ctypes.sizeof(buffer), length))
        return 0

    getdents = fs.getdents.Getdents(sizes)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)

    def read_twice() -> None:
        monkeypatch.setattr(fs.getdents, "_BATCH", 256)
        getdents.read(fd)
        monkeypatch.setattr(fs.getdents, "_BATCH", 1 << 15)
        getdents.read(fd)

    try:
        thread = threading.Thread(target=read_twice)
        thread.start()
        thread.join(30)
    finally:
        os.close(fd)
    assert len(calls) == 2
    assert all(size >= length for size, length in calls), calls


# ----- the child, seen from outside: strace ------------------------------------------------

_SCRIPT = """
import itertools, sys, time
import fs.prefetch
from fs.options import ContentOptions
from store import RepoMode, Repository
from tests.helpers import commit_dir
blocks = itertools.count()
fs.prefetch.blocks_read = lambda: next(blocks)
listing = fs.prefetch.Prefetcher.listing
def slow_listing(self, list_directory):  # the scan slower than the child's start
    time.sleep(0.1)
    return listing(self, list_directory)
fs.prefetch.Prefetcher.listing = slow_listing
sys.executable = sys.argv[3]  # the child, under strace
repo = Repository.init(sys.argv[2], RepoMode.BARE_USER)
commit_dir(repo, __import__("pathlib").Path(sys.argv[1]), options=ContentOptions(skip_special=True))
repo.close()
"""
_PYTHON = tuple(os.fsencode(p) for p in {sys.prefix, sys.base_prefix, os.path.dirname(os.__file__)})
_PACKAGE = os.fsencode(Path(fs.prefetch.__file__).parents[1])  # the child imports fs from it


@pytest.mark.skipif(shutil.which("strace") is None, reason="no strace")
def test_the_child_opens_and_lists_nothing_outside_the_tree(tmp_path: Path) -> None:
    """strace -f -y of the child lister of a cold commit (its python a script that runs
    it under strace): every directory it opens or lists (openat's result, getdents64's
    fd, as -y names them) is inside the tree, through symlinks to / and /proc."""
    source, _ = _hostile_tree(tmp_path)
    trace = tmp_path / "trace"
    script = tmp_path / "commit.py"
    script.write_text(_SCRIPT)
    traced = tmp_path / "python"
    traced.write_text(
        f"#!/bin/sh\nexec strace -f -y -qq -o {trace} -e trace=openat,getdents64"
        f' {sys.executable} "$@"\n'
    )
    traced.chmod(0o755)
    subprocess.run(
        [sys.executable, str(script), str(source), str(tmp_path / "repo"), str(traced)],
        check=True, timeout=120, stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(Path(fs.prefetch.__file__).parents[1])},
    )  # fmt: skip
    inside = os.fsencode(os.path.realpath(source))
    checked = 0
    for line in trace.read_bytes().splitlines():
        # every fd strace names (the fd listed, the dirfd opened from, the fd opened),
        # in whole lines, unfinished ones and resumed ones alike; AT_FDCWD is python's
        # start (the prefetcher opens below its root fd only)
        if b"AT_FDCWD" in line:
            continue
        for path in re.findall(rb"\b\d+<([^>]*)>", line):
            if path.startswith(_PYTHON):
                continue  # python's start (its library's listing)
            if path in (_PACKAGE, _PACKAGE + b"/fs") or path.startswith(_PACKAGE + b"/fs/"):
                continue  # and its own modules' (fs/prefetch_child.py's imports)
            assert path == inside or path.startswith(inside + b"/"), line
            checked += 1
    assert checked > 20


@pytest.mark.parametrize("failing", ["socketpair", "pipe", "popen"])
def test_a_child_that_cannot_be_started_leaves_no_fd_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """Out of fds (EMFILE) while the lister is being started, whatever call meets it:
    _spawn says no (the threads list instead) and every fd it had made is closed (the
    working tree's socketpair version left the root's duplicate open: attack16 3)."""
    import socket

    def out_of_fds(*args: object, **kwargs: object) -> object:
        raise OSError(24, "Too many open files")

    target = {"socketpair": socket, "pipe": os, "popen": subprocess}[failing]
    name = {"socketpair": "socketpair", "pipe": "pipe", "popen": "Popen"}[failing]
    lists_in_a_child(monkeypatch)
    command = fs.prefetch._child_command()
    assert command is not None
    root = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        before = open_fds()
        prefetcher = Prefetcher(root)
        with monkeypatch.context() as patched:
            patched.setattr(target, name, out_of_fds)
            started = prefetcher._spawn(command)  # True where that call is not made
        prefetcher.stop()
        assert started or prefetcher._child is None
        assert open_fds() == before
    finally:
        os.close(root)


_CLI_COLD = """
import itertools, sys
import fs.prefetch
blocks = itertools.count()
fs.prefetch.blocks_read = lambda: next(blocks)  # every listing reads the disk
from sapwood.cli.main import run
sys.argv[0] = "sapwood"
sys.exit(run())
"""


def _holding(tree: Path) -> list[str]:
    """The processes with an fd in ``tree``."""
    inside = os.path.realpath(tree)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(inside + "/"):
                        found.append(pid)
    return found


@pytest.mark.parametrize("bad", ["unreadable", "fifo"])
def test_a_cold_commit_as_a_user_refuses_in_one_line_and_leaves_no_lister(
    shared: Path, bad: str
) -> None:
    """As uid 65534, the prefetcher started (in its child) by a simulated cold tree: a
    directory it may not read, or a FIFO, is one line on stderr and exit 1, and no
    process is left holding the tree."""
    from tests.helpers import AS_NOBODY, NOBODY, user_python

    source = shared / "src"
    for top in "abc":
        (source / top / "sub").mkdir(parents=True)
        (source / top / "sub" / "file").write_bytes(top.encode())
    if bad == "fifo":
        os.mkfifo(source / "b" / "fifo")
    for path in [shared, *shared.rglob("*")]:
        os.lchown(path, NOBODY, NOBODY)
    if bad == "unreadable":
        os.chown(source / "c" / "sub", 0, 0)
        (source / "c" / "sub").chmod(0o700)
    script = shared / "cold.py"
    script.write_text(_CLI_COLD)
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
    cli = [*AS_NOBODY, user_python(), str(script), "--repo", str(shared / "repo")]
    subprocess.run([*cli, "init"], check=True, env=env, timeout=60)
    done = subprocess.run(
        [*cli, "commit", "-b", "main", str(source)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sapwood: error: "), done.stderr
    assert ("Permission denied" if bad == "unreadable" else "fifos") in lines[0]
    assert not _holding(source)
