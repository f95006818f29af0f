"""mount and umount: a commit as a read-only filesystem, without a checkout."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sapwood import UsageError, check_mount_point, mount, serve_mount, unmount
from sapwood.cli.context import repo_path
from sapwood.cli.output import OneLineFormatter

_DAEMON_LOG_FORMAT = "sapwood[%(process)d]: %(message)s"


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
    if len(args.targets) > 2:
        raise UsageError("mount takes [REV] MOUNTPOINT")
    rev, mountpoint = (None, *args.targets) if len(args.targets) == 1 else args.targets
    if not mountpoint:
        raise UsageError("mount: the mount point is empty")
    check_mount_point(mountpoint, args.options)  # before the repository, as always
    start = serve_mount if args.foreground else mount
    start(
        repo_path(args),
        Path(mountpoint),
        rev,
        options=args.options,
        log_format=OneLineFormatter(_DAEMON_LOG_FORMAT),
    )
    return 0


def cmd_umount(args: argparse.Namespace) -> int:
    unmount(args.mountpoint)
    return 0
