"""The thin pyfuse3 adapter: kernel requests onto mountd/view.py, errors onto errno.

This is the only module of sapwood that knows errno values. Everything it serves
is immutable, so entries, attributes and negative lookups are cached by the kernel
for as long as it likes (a day).

Open and opendir answer ENOSYS: the kernel then stops sending them (and release) at
all, keeps every file's pages and every directory's listing in its cache, and sends
reads and listings with file handle 0. pyfuse3 does not pass the inode to read() and
readdir(), so sapwood builds it with a small patch (patches/pyfuse3-no-open.patch)
that passes the inode where the handle is 0. With a stock pyfuse3 the adapter falls
back to real opens whose handle is the inode number: the same reads, more requests.

Every handler is guarded: whatever it raises becomes an errno for that request, never
an exception in pyfuse3's loop (which would end the daemon and leave the mount dead).
An I/O error is logged once per message (each names its object), however often the
kernel asks again, and at most about one a second after the first hundred.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn, ParamSpec, TypeVar

import pyfuse3

from mountd.lru import RecentKeys
from mountd.preparing import Preparer
from mountd.view import Attributes, TreeView
from store import (
    CorruptObjectError,
    NoSuchAttributeError,
    NotADirectoryInTreeError,
    ObjectMissingError,
    PathNotFoundError,
    ReaderGoneError,
    SapwoodError,
)

log = logging.getLogger(__name__)
IMMUTABLE_TIMEOUT = 86400.0
VOLATILE_TIMEOUT = 1.0  # listings of refs and commits, and what hangs off them
NO_OPEN_PASSES_INODE = bool(getattr(pyfuse3, "NO_OPEN_PASSES_INODE", False))
# The patch's read(fh, off, size, ctx): the reader's pid, to give up a verification
# once no reader waits for it (mountd/preparing.py, mountd/waiters.py).
READ_PASSES_CTX = bool(getattr(pyfuse3, "READ_PASSES_CTX", False))
# The kernel's limit of background requests of the mount (read-ahead is one), asked
# for at init (patches/pyfuse3-no-open.patch; an unprivileged daemon gets at most the
# fuse module's max_user_bgreq, thousands where the machine has GiB). At the default,
# 12, twelve reads of hostile objects whose verifications take minutes held every
# slot, and every later read-ahead (the first read of any file over 128 KiB) queued
# behind them in the kernel (attack18 1). Each request held costs the daemon a
# request loop waiting (a task, a page): 1024 of them, a few MiB.
MAX_BACKGROUND = 1024
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT
_T = TypeVar("_T")
_P = ParamSpec("_P")
_LOGGED = RecentKeys[str](1 << 14)  # I/O errors logged already: one line per object

_ERRNO: list[tuple[type[SapwoodError], int]] = [
    (NotADirectoryInTreeError, errno.ENOTDIR),
    (PathNotFoundError, errno.ENOENT),
    (NoSuchAttributeError, errno.ENODATA),
    (ObjectMissingError, errno.EIO),
    (CorruptObjectError, errno.EIO),
    (ReaderGoneError, errno.EINTR),  # no one sees it: the reader is gone
]


def _errno_of(exc: SapwoodError) -> int:
    for kind, number in _ERRNO:
        if isinstance(exc, kind):
            return number
    return errno.EIO


class _LogBudget:
    """At most ``burst`` lines at once, then ``per_second``: a walk over a tree of many
    damaged objects says a hundred of them, then how many it did not say."""

    def __init__(self, burst: int, per_second: float) -> None:
        self.burst = burst
        self.per_second = per_second
        self.tokens = float(burst)
        self.last = time.monotonic()
        self.dropped = 0

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.per_second)
        self.last = now
        if self.tokens < 1:
            self.dropped += 1
            return False
        self.tokens -= 1
        return True


_BUDGET = _LogBudget(burst=100, per_second=1.0)


def _log_once(message: str, traceback: bool = False) -> None:
    if not _LOGGED.first_time(message) or not _BUDGET.allow():
        return
    if _BUDGET.dropped:
        log.error("%d more I/O errors were not logged", _BUDGET.dropped)
        _BUDGET.dropped = 0
    log.error("%s", message, exc_info=traceback)


def fuse_error(exc: Exception) -> pyfuse3.FUSEError:
    """The errno a request answers for ``exc``; an I/O error is logged (once)."""
    if isinstance(exc, pyfuse3.FUSEError):
        return exc
    if isinstance(exc, SapwoodError):
        number = _errno_of(exc)
        if number == errno.EIO:
            _log_once(str(exc))
        return pyfuse3.FUSEError(number)
    if isinstance(exc, OSError):
        _log_once(f"I/O error: {exc}")
    else:  # a bug, or damage nothing foresaw: this request fails, the daemon serves on
        _log_once(f"internal error: {type(exc).__name__}: {exc}", traceback=True)
    return pyfuse3.FUSEError(errno.EIO)


def _guarded(
    handler: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """A request handler that raises nothing but FUSEError (see the module's doc)."""

    @functools.wraps(handler)
    async def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await handler(*args, **kwargs)
        except Exception as exc:
            raise fuse_error(exc) from None

    return guarded


def _pid_of(ctx: Any) -> int:
    """The pid of a request's process (0: unknown)."""
    return int(getattr(ctx, "pid", 0) or 0)


def _read_only() -> NoReturn:
    raise pyfuse3.FUSEError(errno.EROFS)


def entry_attributes(attrs: Attributes) -> pyfuse3.EntryAttributes:
    timeout = VOLATILE_TIMEOUT if attrs.volatile else IMMUTABLE_TIMEOUT
    if attrs.broken:
        timeout = 0.0  # a damaged entry: looking at it again must ask (and fail)
    entry = pyfuse3.EntryAttributes()
    entry.st_ino = attrs.ino
    entry.st_mode = attrs.mode
    entry.st_nlink = attrs.nlink
    entry.st_uid = attrs.uid
    entry.st_gid = attrs.gid
    entry.st_size = attrs.size
    entry.st_blksize = 4096
    entry.st_blocks = (attrs.size + 511) // 512
    entry.st_atime_ns = entry.st_mtime_ns = entry.st_ctime_ns = attrs.time_ns
    entry.entry_timeout = entry.attr_timeout = timeout
    entry.generation = 0
    return entry


class SapwoodOperations(pyfuse3.Operations):
    """pyfuse3 operations over a CommitView. Every write is refused with EROFS."""

    supports_dot_lookup = False
    enable_writeback_cache = False
    max_background = MAX_BACKGROUND  # read by the patched pyfuse3's init (see above)
    read_passes_ctx = READ_PASSES_CTX  # read by the patched pyfuse3's read (see above)

    def __init__(
        self,
        view: TreeView,
        statvfs_path: str,
        no_open: bool = NO_OPEN_PASSES_INODE,
        on_wait: Callable[[], Callable[[], None]] | None = None,
    ) -> None:
        """``on_wait``: called when a handler is about to wait (a large object verified
        in a worker thread: mountd/preparing.py), to have other requests served
        meanwhile (mountd/readers.py); what it returns is called once it has waited."""
        super().__init__()
        self.view = view
        self._statvfs_path = statvfs_path
        self._no_open = no_open
        self._preparer = Preparer(view, on_wait=on_wait)

    @_guarded
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: Any = None
    ) -> pyfuse3.EntryAttributes:
        log.debug("lookup %d %r", parent_inode, name)
        try:
            attrs = self.view.lookup(parent_inode, name)
        except Exception as exc:
            error = fuse_error(exc)
            if error.errno != errno.ENOENT or self.view.volatile_dir(parent_inode):
                raise error from None
            negative = pyfuse3.EntryAttributes()  # st_ino 0: the kernel caches the absence
            negative.st_ino = 0
            negative.entry_timeout = IMMUTABLE_TIMEOUT
            return negative
        return entry_attributes(attrs)

    @_guarded
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return entry_attributes(self.view.getattr(inode))

    @_guarded
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        return None  # inode numbers are derived: nothing to drop (mountd/inodes.py)

    @_guarded
    async def opendir(self, inode: int, ctx: Any) -> int:
        self.view.getattr(inode)
        if self._no_open:
            raise pyfuse3.FUSEError(errno.ENOSYS)  # the kernel caches listings from now on
        return inode

    @_guarded
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        entries = self.view.entries(fh, start_id)  # fh is the inode; lazy: only what fits
        while (item := next(entries, None)) is not None:
            name, attrs, next_id = item
            if not pyfuse3.readdir_reply(token, name, entry_attributes(attrs), next_id):
                break

    @_guarded
    async def releasedir(self, fh: int) -> None:
        return None

    @_guarded
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return self.view.readlink(inode)

    @_guarded
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        if flags & _WRITE_FLAGS:
            _read_only()
        if self._no_open:
            raise pyfuse3.FUSEError(errno.ENOSYS)  # no more opens; reads come by inode
        await self._preparer.open(inode, _pid_of(ctx))
        return pyfuse3.FileInfo(fh=inode, keep_cache=True)

    @_guarded
    async def read(self, fh: int, off: int, size: int, ctx: Any = None) -> bytes:
        """``ctx``: the request's context, with the patch (READ_PASSES_CTX)."""
        return await self._preparer.read(fh, off, size, _pid_of(ctx))  # fh is the inode

    @_guarded
    async def release(self, fh: int) -> None:
        return None  # the view keeps a bounded set of open objects itself

    @_guarded
    async def flush(self, fh: int) -> None:
        raise pyfuse3.FUSEError(errno.ENOSYS)  # nothing to flush: the kernel stops asking

    @_guarded
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        return self.view.getxattr(inode, name)

    @_guarded
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return list(self.view.xattrs(inode))

    @_guarded
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        st = os.statvfs(self._statvfs_path)
        data = pyfuse3.StatvfsData()
        data.f_bsize, data.f_frsize = st.f_bsize, st.f_frsize
        data.f_blocks, data.f_bfree, data.f_bavail = st.f_blocks, 0, 0  # read-only
        data.f_files, data.f_ffree, data.f_favail = st.f_files, 0, 0
        data.f_namemax = 255
        return data

    # ----- every write is refused ------------------------------------------------------
    @_guarded
    async def setattr(self, *args: Any) -> NoReturn:
        _read_only()

    @_guarded
    async def mknod(self, *args: Any) -> NoReturn:
        _read_only()

    @_guarded
    async def mkdir(self, *args: Any) -> NoReturn:
        _read_only()

    @_guarded
    async def unlink(self, *args: Any) -> NoReturn:
        _read_only()

    @_guarded
    async def rmdir(self, *args: Any) -> NoReturn:
        _read_only()

    @_guarded
    async def symlink(self, *args: Any) -> NoReturn:
        _read_only()

    @_guarded
    async def rename(self, *args: Any) -> NoReturn:
        _read_only()

    @_guarded
    async def link(self, *args: Any) -> NoReturn:
        _read_only()

    @_guarded
    async def write(self, *args: Any) -> NoReturn:
        _read_only()

    @_guarded
    async def create(self, *args: Any) -> NoReturn:
        _read_only()

    @_guarded
    async def setxattr(self, *args: Any) -> NoReturn:
        _read_only()

    @_guarded
    async def removexattr(self, *args: Any) -> NoReturn:
        _read_only()
