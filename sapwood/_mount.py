"""``sapwood.mount``: a commit, or the whole repository, as a read-only FUSE filesystem.

The same as ``sapwood mount``, which is a client of this module: the same refusals
(a mount point that is already one, is not a directory, or would hide the
repository), the same daemon (forked, in its own session), the same log.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from fs.mounts import mounted_at
from store import ObjectId, RepoNotFoundError, Repository, UsageError, rev_parse

log = logging.getLogger(__name__)
_SYSLOG = "/dev/log"
_DAEMON_EXIT_TIMEOUT = 5.0  # for the daemon to end once its mount is gone
_LOG_FORMAT = "sapwood[%(process)d]: %(message)s"


class MountPointError(UsageError):
    """A mount point sapwood refuses: already a mount point, not a directory, or one
    that would hide the repository the daemon reads (``mountpoint``)."""

    def __init__(self, message: str = "", *, mountpoint: Path | None = None):
        super().__init__(message or f"{mountpoint}: cannot mount there")
        self.mountpoint = mountpoint


class Mount:
    """A mount made by :func:`mount`, served by a background daemon.

    A context manager: leaving the ``with`` block unmounts, as :meth:`unmount` does.
    ``mountpoint`` is the mount point as an absolute path (resolved when mounted);
    ``commit_id`` is the commit shown, None for the whole repository's view.
    """

    def __init__(self, mountpoint: Path, commit_id: ObjectId | None, pid: int) -> None:
        self.mountpoint = Path(os.path.abspath(mountpoint))  # a later chdir changes nothing
        self.commit_id = commit_id
        self.pid = pid  # the daemon's process id
        self._mounted = True

    def unmount(self) -> None:
        """Unmount (once; later calls do nothing) and wait for the daemon to end.

        A mount already gone (``sapwood umount`` or fusermount3 from elsewhere) is no
        error: its daemon is still collected, so that it leaves no zombie behind."""
        if not self._mounted:
            return
        if mounted_at(self.mountpoint) is not None:
            unmount(self.mountpoint)
        self._mounted = False
        _reap(self.pid)

    def __enter__(self) -> Mount:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.unmount()

    def __repr__(self) -> str:
        shown = self.commit_id.hex() if self.commit_id else "repository"
        return f"Mount({str(self.mountpoint)!r}, {shown}, pid={self.pid})"


def mount(
    repo_path: str | os.PathLike[str],
    mountpoint: str | os.PathLike[str],
    rev: str | None = None,
    *,
    options: Sequence[str] = (),
    log_format: logging.Formatter | None = None,
) -> Mount:
    """Mount commit ``rev`` of the repository at ``repo_path`` read-only on
    ``mountpoint`` and return once it is mounted; without ``rev``, the whole
    repository (refs/, commits/, history/).

    A daemon forked from this process, in its own session, serves the mount until
    it is unmounted (:meth:`Mount.unmount`, leaving the ``with`` block, or
    :func:`unmount`). It opens its own copy of the repository and keeps none of this
    process's open files (a lock released here is released). Being a fork, call it
    before starting threads. ``options`` are those
    of ``sapwood mount -o``: allow_other, user_owned, with_open, logfile=PATH (where
    the daemon logs; default: the system log, formatted by ``log_format``), and
    other libfuse options. Raises MountPointError for a mount point sapwood refuses,
    MountError if the daemon fails to mount (its error as the message).
    """
    from mountd.daemon import quiet_stderr, serve, start_in_background

    repo_dir, mount_dir = Path(repo_path), Path(mountpoint)
    target, commit_id, handler = _prepare(repo_dir, mount_dir, rev, options, log_format, True)
    path = repo_dir.resolve()

    def serve_in_child() -> None:
        _log_to(handler)
        with Repository.open(path) as child_repo:
            serve(child_repo, commit_id, target, list(options), on_mounted=quiet_stderr)

    try:
        pid = start_in_background(serve_in_child, mount_dir, _handler_fds(handler))
    finally:
        if handler is not None:
            handler.close()  # the daemon's, opened here for it: the fork has its own copy
    return Mount(target, commit_id, pid)  # resolved: a later chdir changes nothing


def serve_mount(
    repo_path: str | os.PathLike[str],
    mountpoint: str | os.PathLike[str],
    rev: str | None = None,
    *,
    options: Sequence[str] = (),
    log_format: logging.Formatter | None = None,
) -> None:
    """As :func:`mount`, but serve in this process until unmounted (or SIGINT, SIGTERM,
    SIGHUP): ``sapwood mount -f``. Logs go where this process logs, and to
    logfile=PATH if that option is given (for the time of this call only)."""
    from mountd.daemon import serve

    repo_dir, mount_dir = Path(repo_path), Path(mountpoint)
    target, commit_id, handler = _prepare(repo_dir, mount_dir, rev, options, log_format, False)
    _log_to(handler)
    try:
        with Repository.open(repo_dir) as repo:
            serve(repo, commit_id, target, list(options))
    finally:
        if handler is not None:  # the caller's logging stays as it was, the file closed
            logging.getLogger().removeHandler(handler)
            handler.close()


def unmount(mountpoint: str | os.PathLike[str]) -> None:
    """Unmount the sapwood mount at ``mountpoint``, even one whose daemon died.

    Refuses (UsageError) a path that is not a mount point or is another filesystem's.
    """
    from mountd.daemon import unmount as unmount_daemon

    unmount_daemon(Path(mountpoint))


def check_mount_point(mountpoint: str | os.PathLike[str], options: Sequence[str] = ()) -> None:
    """The refusals :func:`mount` makes before it looks at the repository, without
    mounting: ``mountpoint`` already a mount point or not a directory
    (MountPointError), ``options`` that ``sapwood mount -o`` would not take
    (UsageError)."""
    _log_file_of_checked(Path(mountpoint), options)


def _log_file_of_checked(where: Path, options: Sequence[str]) -> Path | None:
    """:func:`check_mount_point`; then the logfile= of ``options``, parsed once."""
    from mountd.daemon import mount_options

    if mounted_at(where) is not None:  # first: a dead mount is not even a directory
        raise MountPointError(f"{where}: already a mount point", mountpoint=where)
    if not where.is_dir():
        raise MountPointError(f"{where}: not a directory", mountpoint=where)
    return mount_options(list(options)).log_file


def _prepare(
    repo_path: Path,
    mountpoint: Path,
    rev: str | None,
    options: Sequence[str],
    log_format: logging.Formatter | None,
    background: bool,
) -> tuple[Path, ObjectId | None, logging.Handler | None]:
    """The checks every mount passes before anything is started, in the CLI's order:
    (resolved mount point, commit to show, log handler for the daemon)."""
    if "\0" in str(repo_path):  # no other check would get as far as opening it
        raise RepoNotFoundError(f"{str(repo_path)!r}: not a sapwood repository", path=repo_path)
    log_file = _log_file_of_checked(mountpoint, options)
    _refuse_mount_over_repository(repo_path, mountpoint)
    with Repository.open(repo_path) as repo:  # closed before any fork: LMDB asks it
        commit_id = rev_parse(repo, rev) if rev is not None else None
    handler = _daemon_log_handler(log_file, background, log_format)
    return mountpoint.resolve(), commit_id, handler


def _refuse_mount_over_repository(repo: Path, mountpoint: Path) -> None:
    """The daemon reads the repository by path: a mount that hid it would have the
    daemon wait on itself for good."""
    home = os.path.realpath(repo)
    over = os.path.realpath(mountpoint)
    if home == over or home.startswith(over.rstrip("/") + "/"):
        raise MountPointError(
            f"{mountpoint}: would hide the repository {repo}; mount elsewhere",
            mountpoint=mountpoint,
        )


def _daemon_log_handler(
    log_file: Path | None, background: bool, log_format: logging.Formatter | None
) -> logging.Handler | None:
    """Where the daemon's log lines (corrupt objects, ...) go besides stderr, which a
    background daemon no longer has once mounted: logfile=PATH, else the system log
    (background only, when there is one)."""
    handler: logging.Handler
    if log_file is not None:
        try:
            _require_regular_log(log_file)
            handler = logging.FileHandler(log_file)
        except OSError as exc:
            raise UsageError(f"{log_file}: cannot log there: {exc.strerror}") from None
    elif background and os.path.exists(_SYSLOG):
        try:
            handler = logging.handlers.SysLogHandler(_SYSLOG)
        except OSError:
            return None  # no system log after all: the daemon stays quiet
    else:
        return None
    handler.setFormatter(log_format or logging.Formatter(_LOG_FORMAT))
    return handler


def _require_regular_log(log_file: Path) -> None:
    """A log file is a regular file (created if absent): a FIFO would block the daemon."""
    fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{log_file}: not a regular file; cannot log there")
    finally:
        os.close(fd)


def _handler_fds(handler: logging.Handler | None) -> list[int]:
    """The descriptors the daemon's log handler writes to (a file, the log's socket)."""
    stream = getattr(handler, "stream", None)
    sock = getattr(handler, "socket", None)
    return [owner.fileno() for owner in (stream, sock) if owner is not None]


def _log_to(handler: logging.Handler | None) -> None:
    if handler is not None:
        logging.getLogger().addHandler(handler)


def _reap(pid: int) -> None:
    """Collect the daemon once its mount is gone, so it leaves no zombie behind; one
    that lingers is left to end on its own."""
    deadline = time.monotonic() + _DAEMON_EXIT_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return
        except ChildProcessError:  # not ours (a fork of a fork), or already collected
            return
        time.sleep(0.01)
    log.warning("mount daemon %d still running after its unmount", pid)
