"""Making writes durable: syncfs of a whole filesystem, fsync of directories, small
files replaced atomically."""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import threading
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, cast

from store.errors import OutOfSpaceError

log = logging.getLogger(__name__)


@functools.cache
def _syncfs_function() -> Callable[[int], int] | None:
    """The C library's syncfs, looked up the first time it is needed in the process's
    own symbols (dlopen(NULL): Python is linked with its C library), not through
    ctypes.util.find_library("c"), which runs ``ldconfig -p`` in a child process (~10
    ms a command, syncing or not); None where it is not there (a static Python, a C
    library without it)."""
    import ctypes  # here: a command that never syncs never loads it (1-2 ms)

    try:
        function: Callable[[int], int] = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError) as exc:
        log.warning("no syncfs in this process (%s): every filesystem is synced instead", exc)
        return None
    return function


def syncfs(path: Path) -> None:
    """Flush every dirty page of the filesystem holding ``path`` (one call, like OSTree);
    without syncfs, every filesystem's (sync(2): slower, as durable)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        function = _syncfs_function()
        if function is None:
            os.sync()
        elif function(fd) != 0:
            import ctypes  # loaded by _syncfs_function already

            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


class InBackground:
    """A flush (``flush()``, e.g. a syncfs) run in a thread of its own from the moment
    this is made, so that the caller can prepare what must follow it (a transaction's
    LMDB write: its checks and rows) while the disk works. ``wait()`` returns once it is
    done and raises what it raised: the commit point waits for it before it commits, so
    the order on disk is that of a flush in line."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sapwood-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._flush()
        except BaseException as exc:  # handed to the waiting thread, raised there
            self._error = exc

    def join(self) -> None:
        """Wait for the flush to end, whatever it raised (kept for ``wait``)."""
        self._thread.join()

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def replace_file(directory: Path, name: str, data: bytes, fsync: bool = True) -> None:
    """Replace ``directory/name`` by a file holding ``data`` (mode 0644) in one rename:
    a reader, or a crash, sees the old file or the new one, whole.

    The temporary file gets a random name (made with O_EXCL, as mkstemp does), never one
    known in advance: a symlink planted at such a name was followed, written and
    chmodded (summary -u)."""
    fd, tmp = _new_file(directory, f".{name}.tmp-")
    try:
        with open(fd, "wb") as out:
            out.write(data)
            if fsync:
                out.flush()
                os.fsync(out.fileno())
            os.fchmod(out.fileno(), 0o644)
        os.rename(tmp, directory / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(directory)


_NEW_FILE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _new_file(directory: Path, prefix: str) -> tuple[int, Path]:
    """A new file (mode 0600) in ``directory`` named ``prefix`` and 16 random hex digits,
    open for writing: tempfile.mkstemp without importing tempfile (and random: ~2-3 ms
    of every pull's start-up, session 12)."""
    for _ in range(100):
        path = directory / f"{prefix}{os.urandom(8).hex()}"
        try:
            return os.open(path, _NEW_FILE, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory}")


def temporary_file(directory: str | Path, buffering: int = -1) -> BinaryIO:
    """An unnamed file in ``directory``, gone once closed: tempfile.TemporaryFile's
    O_TMPFILE without importing tempfile (above); a filesystem or kernel without
    O_TMPFILE gets tempfile's own (a named file unlinked at once)."""
    flags = os.O_RDWR | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_TMPFILE
    try:
        fd = os.open(directory, flags, 0o600)
    except OSError:  # EOPNOTSUPP, EISDIR (a kernel before 3.11), or what tempfile says
        import tempfile

        return cast(BinaryIO, tempfile.TemporaryFile(dir=directory, buffering=buffering))
    try:
        return open(fd, "w+b", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dirs(paths: Collection[Path]) -> None:
    """fsync every directory of ``paths``, many at once: the filesystem's journal (ext4's
    jbd2, XFS's log) then makes them durable in a few commits, not one commit each (the
    83 object directories of a small update pull, at load 6: 50-150 ms one after the
    other, 10-45 ms at once)."""
    if len(paths) <= 1:
        for path in paths:
            fsync_dir(path)
        return
    with ThreadPoolExecutor(min(len(paths), 16), thread_name_prefix="fsync") as pool:
        for _ in pool.map(fsync_dir, paths):  # map re-raises the first error
            pass


def boot_id() -> str:
    """The kernel's boot id: staged data of another boot may never have reached disk."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    except OSError:
        return "unknown"


@contextlib.contextmanager
def space_errors(consequence: str) -> Iterator[None]:
    """Turn ENOSPC/EDQUOT inside the block into OutOfSpaceError, saying ``consequence``."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutOfSpaceError(f"no space left on the disk; {consequence}") from exc
        raise
