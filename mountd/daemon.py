"""The mount daemon: pyfuse3 on trio, signals, going to the background, unmounting.

``sapwood mount`` without -f forks a daemon in a new session and returns once the
mount point is mounted (or prints the daemon's error and fails). In the foreground,
SIGINT and SIGTERM end the loop and unmount cleanly.

Whether something is mounted, and what, is read from the mount table
(/proc/self/mountinfo), never by looking at the mount point: looking goes through the
daemon, which may be busy, failing, or dead ("Transport endpoint is not connected").
A sapwood mount is of type fuse.sapwood from source "sapwood"; ``sapwood umount``
unmounts nothing else.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

import pyfuse3
import trio

from fs.mounts import MountEntry, mounted_at
from mountd.fuse_ops import NO_OPEN_PASSES_INODE, SapwoodOperations
from mountd.mapped import bound_view_memory
from mountd.readers import Readers
from mountd.repo_view import RepositoryView
from mountd.view import CommitView, TreeView, ViewOptions
from store import MountError, ObjectId, Repository, SapwoodError, UsageError

log = logging.getLogger(__name__)
SAPWOOD_OPTIONS = {"user_owned", "with_open"}  # ours, with logfile=; the rest go to libfuse
_READY_TIMEOUT = 30.0
_ERROR_PREFIX = "sapwood: error: "  # the child's last line when it fails to mount
_STOP_TIMEOUT = 5.0  # for a daemon asked to stop (SIGTERM) before it is killed
_PROBE_TIMEOUT = 2.0  # for a look at a mount point: a dead mount fails it at once
SAPWOOD_FSTYPE = "fuse.sapwood"
SAPWOOD_SOURCE = "sapwood"
TRACEMALLOC_ENV = "SAPWOOD_MOUNT_TRACEMALLOC"  # a file: SIGUSR1 writes where memory went
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # each unmounts


def is_sapwood(entry: MountEntry) -> bool:
    """A mount made by sapwood (its type and source), not any other filesystem."""
    return entry.fstype == SAPWOOD_FSTYPE and entry.source == SAPWOOD_SOURCE


@dataclass(frozen=True)
class MountOptions:
    fuse: set[str]  # for libfuse; always read-only
    user_owned: bool  # show every entry as owned by the mounting user
    with_open: bool  # let the kernel send open/opendir, as with a stock pyfuse3
    log_file: Path | None = None  # where a background daemon logs (else syslog, if any)


def mount_options(options: list[str]) -> MountOptions:
    """Split ``-o`` options into sapwood's and libfuse's."""
    chosen = {opt for text in options for opt in text.split(",") if opt}
    log_files = {opt for opt in chosen if opt.startswith("logfile=")}
    if any(opt == "logfile=" for opt in log_files) or len(log_files) > 1:
        raise UsageError("-o logfile= takes one path")
    log_file = Path(log_files.pop().removeprefix("logfile=")).absolute() if log_files else None
    chosen -= {opt for opt in chosen if opt.startswith("logfile=")}
    fuse = (chosen - SAPWOOD_OPTIONS) | {"ro", "fsname=sapwood", "subtype=sapwood"}
    if "no_default_permissions" in fuse:
        fuse -= {"no_default_permissions"}
    else:
        fuse |= {"default_permissions"}
    return MountOptions(fuse, "user_owned" in chosen, "with_open" in chosen, log_file)


def serve(
    repo: Repository,
    commit_id: ObjectId | None,
    mountpoint: Path,
    options: list[str],
    on_mounted: Callable[[], None] | None = None,
) -> None:
    """Mount one commit (or, without one, the repository) and serve until unmounted.

    The commit and its root are read before anything is mounted, so a damaged one is
    one error here; once mounted, whatever ends the loop unmounts.
    """
    chosen = mount_options(options)
    shown = f"commit {commit_id.hex()}" if commit_id else "the repository"
    view = _open_view(repo, commit_id, chosen, shown)
    no_open = NO_OPEN_PASSES_INODE and not chosen.with_open
    bound_view_memory(view)  # the libraries mapped by now: its baseline
    readers = Readers()
    operations = SapwoodOperations(view, str(repo.path), no_open=no_open, on_wait=readers.add)
    early: list[int] = []  # stop signals before the loop listens for them (attack12 4)
    previous: dict[signal.Signals, Any] = {}  # those replaced, to put back
    try:
        for signum in _STOP_SIGNALS:  # ValueError off the main thread, as trio's would be
            previous[signum] = signal.signal(signum, lambda number, _: early.append(number))
        pyfuse3.init(operations, str(mountpoint), chosen.fuse)
    except BaseException as exc:
        _restore(previous)
        view.close()
        if isinstance(exc, RuntimeError):
            raise MountError(f"cannot mount on {mountpoint}: {exc}") from None
        raise
    try:
        log.info("mounted %s on %s", shown, mountpoint)
        if on_mounted is not None:
            on_mounted()
        trio.run(_main, readers, early)
    finally:
        _restore(previous)
        pyfuse3.close(unmount=True)
        view.close()


def _restore(handlers: dict[signal.Signals, Any]) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _open_view(
    repo: Repository, commit_id: ObjectId | None, chosen: MountOptions, shown: str
) -> TreeView:
    """The view to serve: the commit's, or the repository's. Making it reads the commit
    and its root, so a damaged one is a MountError here."""
    owner = (os.getuid(), os.getgid()) if chosen.user_owned else None
    view_options = ViewOptions(owner=owner)
    try:
        view: TreeView = (
            RepositoryView(repo, view_options)
            if commit_id is None
            else CommitView(repo, commit_id, view_options)
        )
    except SapwoodError as exc:
        raise MountError(f"cannot mount {shown}: {exc}") from None
    return view


async def _main(readers: Readers, early: list[int]) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signals, nursery.cancel_scope, early)
        if os.environ.get(TRACEMALLOC_ENV):
            nursery.start_soon(_dump_memory_on_signal, Path(os.environ[TRACEMALLOC_ENV]))
        await readers.run()  # one loop, and more while handlers wait (mountd/readers.py)
        nursery.cancel_scope.cancel()


async def _dump_memory_on_signal(report: Path) -> None:
    """A debugging aid (SAPWOOD_MOUNT_TRACEMALLOC=FILE): trace the daemon's allocations
    and, on each SIGUSR1, write the lines that hold the most memory to FILE."""
    import tracemalloc

    tracemalloc.start(4)
    with trio.open_signal_receiver(signal.SIGUSR1) as signals:
        async for _ in signals:
            snapshot = tracemalloc.take_snapshot()
            top = snapshot.statistics("traceback")[:25]
            total = sum(stat.size for stat in snapshot.statistics("filename"))
            lines = [f"traced: {total >> 10} KiB in Python objects"]
            for stat in top:
                lines.append(f"{stat.size >> 10} KiB in {stat.count} blocks")
                lines.extend(f"    {line}" for line in stat.traceback.format())
            report.write_text("\n".join(lines) + "\n")


async def _stop_on_signals(scope: trio.CancelScope, early: list[int]) -> None:
    """Unmount on the first stop signal, one that came before this listened included:
    the mount is up once pyfuse3.init returns (``sapwood mount`` returns then), and a
    SIGTERM before the loop ran killed the daemon, leaving a dead mount (attack12 4)."""
    with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
        signum = early[0] if early else await signals.__anext__()
        log.info("signal %d: unmounting", signum)
        pyfuse3.terminate()
        scope.cancel()  # and a read waiting for a verification (mountd/preparing.py)


def start_in_background(
    serve_mount: Callable[[], None], mountpoint: Path, keep_fds: Collection[int] = ()
) -> int:
    """Run ``serve_mount`` in a forked, detached child; return its pid once it has mounted.

    The child keeps none of the caller's open files but ``keep_fds`` (its log
    handler's, opened by the caller to report a bad log file at once).

    Forking (rather than starting a new interpreter) saves the child's start-up and
    imports: `sapwood mount` returns in about half the time. The caller must hold no
    open repository (LMDB forbids using an environment across fork); the child opens
    its own. The child's stderr goes to a file, read back if it fails before mounting.
    """
    with tempfile.TemporaryFile() as log_file:
        child = os.fork()
        if child == 0:
            _run_detached(serve_mount, log_file, keep_fds)
        try:
            _wait_for_mount(child, mountpoint, log_file)
        except MountError:
            raise  # the child is gone already (reaped, or stopped by the wait)
        except BaseException:  # Ctrl-C, a signal: no Mount for the caller to undo
            _stop(child, mountpoint)
            raise
    return child


def quiet_stderr() -> None:
    """After mounting, a background daemon's stderr (a file nobody reads) goes away."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)


def _run_detached(
    serve_mount: Callable[[], None], log_file: IO[bytes], keep_fds: Collection[int]
) -> NoReturn:
    status = 1
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(log_file.fileno(), 2)
        _close_the_callers_files(keep_fds)
        serve_mount()
        status = 0
    except SapwoodError as exc:
        log.error("error: %s", exc)  # the CLI's log format makes it "sapwood: error: ..."
        # The line _wait_for_mount reads back, whatever the caller's logging (another
        # format, or none): the library's callers configure it, not sapwood.
        os.write(2, f"{_ERROR_PREFIX}{exc}\n".encode("utf-8", "backslashreplace"))
    except BaseException:
        log.exception("the mount daemon failed")
    finally:
        sys.stderr.flush()
        os._exit(status)


def _close_the_callers_files(keep_fds: Collection[int]) -> None:
    """The daemon outlives the call: it must not hold the caller's files, or a lock the
    caller takes and later releases (flock, a transaction's repository lock) stays
    held as long as the mount does (PEP 3143 closes them all for the same reason).

    The caller's objects that owned those descriptors live on in this copy of the
    process, and the numbers will soon be the daemon's own files (its index): none of
    them may write or close one again. So the cyclic collector never finalizes them
    (frozen), and log handlers other than stderr's are dropped first (closing, if
    they go, what is still their own file).
    """
    gc.freeze()
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        if isinstance(logger, logging.Logger):
            for handler in list(logger.handlers):
                if getattr(handler, "stream", None) not in (sys.stderr, sys.stdout):
                    logger.removeHandler(handler)
    keep = sorted({fd for fd in keep_fds if fd > 2})
    low = 3
    for fd in keep:
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _wait_for_mount(child: int, mountpoint: Path, log_file: IO[bytes]) -> None:
    """Return once the child's mount is in the mount table; raise the child's error if
    it exits first. A child that does neither in time is stopped and its mount removed."""
    deadline = time.monotonic() + _READY_TIMEOUT
    while time.monotonic() < deadline:
        entry = mounted_at(mountpoint)
        if entry is not None and is_sapwood(entry):
            return
        if os.waitpid(child, os.WNOHANG) != (0, 0):
            log_file.seek(0)
            lines = log_file.read().decode(errors="replace").strip().splitlines()
            message = lines[-1].removeprefix(_ERROR_PREFIX) if lines else "the daemon exited"
            raise MountError(message)
        time.sleep(0.005)
    _stop(child, mountpoint)
    raise MountError(f"{mountpoint}: not mounted after {_READY_TIMEOUT:.0f} s")


def _stop(child: int, mountpoint: Path) -> None:
    """End a daemon that did not mount in time: asked first (it unmounts what it has
    mounted), then killed; a mount it leaves behind is removed."""
    os.kill(child, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT
    while os.waitpid(child, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            break
        time.sleep(0.01)
    entry = mounted_at(mountpoint)
    if entry is not None and is_sapwood(entry):
        _fusermount(entry, lazy=True)


def unmount(mountpoint: Path) -> None:
    """Unmount the sapwood mount at ``mountpoint``, live or dead; refuse anything else.

    A dead mount (its daemon killed) may refuse a plain unmount while a process still
    has it open or as its directory; it is then detached (fusermount3 -u -z), which
    nothing can use any more anyway. A live one that is busy stays, with the error.
    """
    entry = mounted_at(mountpoint)
    if entry is None:
        raise UsageError(f"{mountpoint}: not a mount point")
    if not is_sapwood(entry):
        raise UsageError(
            f"{mountpoint}: not a sapwood mount ({entry.fstype} from {entry.source}): left mounted"
        )
    result = _fusermount(entry, lazy=False)
    if result.returncode != 0 and _is_dead(entry):
        result = _fusermount(entry, lazy=True)
    if result.returncode != 0:
        raise MountError(result.stderr.strip() or f"cannot unmount {mountpoint}")


def _fusermount(entry: MountEntry, lazy: bool) -> subprocess.CompletedProcess[str]:
    flags = ["-u", "-z"] if lazy else ["-u"]
    return subprocess.run(
        ["fusermount3", *flags, os.fsdecode(entry.point)], capture_output=True, text=True
    )


def _is_dead(entry: MountEntry) -> bool:
    """Whether the mount's daemon is gone: then every request to it fails at once.

    The request is statfs (``stat -f``), which the kernel never answers from its cache.
    It is made by a child process: the daemon of a live mount may be hung, and a process
    waiting on it cannot even be killed. A request that takes that long says "not
    dead"; the child ends whenever the daemon answers or goes.
    """
    probe = subprocess.Popen(
        ["stat", "-f", "-c", "", "--", os.fsdecode(entry.point)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        return probe.wait(timeout=_PROBE_TIMEOUT) != 0
    except subprocess.TimeoutExpired:
        return False
