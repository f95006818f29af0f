"""Repository locks: writers share, prune excludes (DESIGN.md, Storage)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from store.errors import RepoBusyError


@contextmanager
def repo_lock(repo_path: Path, exclusive: bool, wait: float | None = None) -> Iterator[None]:
    """Hold the repository's lock shared (writers) or exclusive (prune, repair).
    ``wait``: at most this many seconds for it (RepoBusyError then), where another
    user's process may hold it for ever; None: as long as it takes.

    The lock is taken on the repository directory itself, not on a file inside it:
    a lock file can be unlinked and replaced while a writer holds it, and a prune
    that then locks the new file would delete what the writer is reusing. The
    directory cannot be swapped under a running process without moving the whole
    repository (which carries the lock along).
    """
    fd = os.open(repo_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    owner = os.getpid()
    operation = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        if wait is None:
            fcntl.flock(fd, operation)
        else:
            _flock_within(fd, operation, wait, repo_path)
        yield
    finally:
        unlock_and_close(fd, owner)


def _flock_within(fd: int, operation: int, wait: float, repo_path: Path) -> None:
    """flock() without blocking, tried again (every 10 ms, then less often) until
    ``wait`` seconds have passed: a blocking flock cannot be given up."""
    deadline = time.monotonic() + wait
    pause = 0.01
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RepoBusyError(
                    f"{repo_path}: the repository is locked by another process (a prune or "
                    f"a repair) for more than {wait:g} s",
                    path=str(repo_path),
                ) from None
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.5)


def unlock_and_close(fd: int, owner: int) -> None:
    """Let go of a flock() and its fd, in the process ``owner`` that took it. Unlocked
    first: a lock belongs to the open file, which a process forked meanwhile (a library
    user's worker pool) shares for its whole life; closing only our fd left the lock held
    by the copy, and a prune waited for the workers to end (attack21 9). Only closed in
    any other process: a forked child unwinding through the lock's block unlocked the
    parent's lock while the parent still held it, and a prune could then delete what a
    live writer used (R17-3)."""
    try:
        if os.getpid() == owner:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def try_lock_dir(path: Path) -> int | None:
    """Take an exclusive lock on a directory without waiting; its fd, or None if held."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextmanager
def config_lock(repo_path: Path) -> Iterator[None]:
    """Hold the lock of changes to REPO/config (config set and unset, remote add and
    delete): each reads the whole config, changes it and writes it back, so two at once
    lost one change (a remote added while a setting was set vanished).

    The config is replaced by a rename, so a lock on it would be on the old file; the
    lock is on REPO/tmp, a directory every repository has whose own inode nothing else
    locks (transactions lock the staging directories inside it). Without a config
    there is no repository to lock: the caller's read of it says so.
    """
    if not (repo_path / "config").is_file():
        yield
        return
    fd = os.open(ensure_tmp(repo_path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    owner = os.getpid()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        unlock_and_close(fd, owner)


def ensure_tmp(repo_path: Path) -> Path:
    """REPO/tmp, made again (private, as init makes it) if it was removed by hand, as
    OSTree remakes it on open: it holds nothing that must survive (staging directories,
    locks), and without it every write failed with a bare "No such file or directory"."""
    tmp = repo_path / "tmp"
    with contextlib.suppress(FileExistsError):
        os.mkdir(tmp, 0o700)
    return tmp
