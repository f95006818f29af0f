"""mount and umount: a commit as a read-only filesystem, without a checkout."""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import stat
from pathlib import Path
from typing import Any

from fs.mounts import mounted_at
from sapwood.cli.context import open_repo, repo_path
from sapwood.cli.output import OneLineFormatter
from store import Repository, UsageError, rev_parse

_SYSLOG = "/dev/log"


def register(commands: Any) -> None:
    p = commands.add_parser("mount", help="mount a commit read-only (FUSE)")
    p.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        help="allow_other, user_owned (every file shown as yours), logfile=PATH (the"
        " daemon's log; default: syslog), with_open (the kernel sends open requests:"
        " slower, as with a stock pyfuse3), other libfuse options",
    )
    p.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    p.add_argument(
        "targets",
        nargs="+",
        metavar="[REV] MOUNTPOINT",
        help="a commit to mount; without one, the whole repository (refs/, commits/, history/)",
    )
    p.set_defaults(func=cmd_mount)

    u = commands.add_parser("umount", help="unmount a sapwood mount")
    u.add_argument("mountpoint", type=Path)
    u.set_defaults(func=cmd_umount)


def cmd_mount(args: argparse.Namespace) -> int:
    from mountd.daemon import mount_options, quiet_stderr, serve, start_in_background

    if len(args.targets) > 2:
        raise UsageError("mount takes [REV] MOUNTPOINT")
    rev, mountpoint = (None, *args.targets) if len(args.targets) == 1 else args.targets
    if not mountpoint:
        raise UsageError("mount: the mount point is empty")
    mountpoint = Path(mountpoint)
    if mounted_at(mountpoint) is not None:  # first: a dead mount is not even a directory
        raise UsageError(f"{mountpoint}: already a mount point")
    if not mountpoint.is_dir():
        raise UsageError(f"{mountpoint}: not a directory")
    log_file = mount_options(args.options).log_file
    _refuse_mount_over_repository(repo_path(args), mountpoint)
    with open_repo(args) as repo:
        commit_id = rev_parse(repo, rev) if rev is not None else None
        log_handler = _daemon_log_handler(log_file, background=not args.foreground)
        if args.foreground:
            _log_to(log_handler)
            serve(repo, commit_id, mountpoint.resolve(), args.options)
            return 0
    path, target = repo_path(args).resolve(), mountpoint.resolve()

    def serve_in_child() -> None:
        _log_to(log_handler)
        with Repository.open(path) as child_repo:
            serve(child_repo, commit_id, target, args.options, on_mounted=quiet_stderr)

    start_in_background(serve_in_child, mountpoint)
    return 0


def _refuse_mount_over_repository(repo: Path, mountpoint: Path) -> None:
    """The daemon reads the repository by path: a mount that hid it would have the
    daemon wait on itself for good."""
    home = os.path.realpath(repo)
    over = os.path.realpath(mountpoint)
    if home == over or home.startswith(over.rstrip("/") + "/"):
        raise UsageError(f"{mountpoint}: would hide the repository {repo}; mount elsewhere")


def _daemon_log_handler(log_file: Path | None, background: bool) -> logging.Handler | None:
    """Where the daemon's log lines (corrupt objects, ...) go besides stderr, which a
    background daemon no longer has once mounted: ``-o logfile=PATH``, else the system
    log (background only, when there is one)."""
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
            return None  # no system log after all: the daemon stays quiet, as before
    else:
        return None
    handler.setFormatter(OneLineFormatter("sapwood[%(process)d]: %(message)s"))
    return handler


def _log_to(handler: logging.Handler | None) -> None:
    if handler is not None:
        logging.getLogger().addHandler(handler)


def cmd_umount(args: argparse.Namespace) -> int:
    from mountd.daemon import unmount

    unmount(args.mountpoint)
    return 0


def _require_regular_log(log_file: Path) -> None:
    """A log file is a regular file (created if absent): a FIFO would block the daemon."""
    fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{log_file}: not a regular file; cannot log there")
    finally:
        os.close(fd)
