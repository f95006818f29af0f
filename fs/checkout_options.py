"""Checkout's options, its result and its errors, the option checks, and the
permission bits a checkout gives what it creates (user mode masks them)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Literal, get_args

from store import (
    PermissionDeniedError,
    RepoMode,
    Repository,
    SapwoodError,
    UsageError,
    user_checkout_mode,
)

Union = Literal["none", "union", "add", "identical"]
_SETID = stat.S_ISUID | stat.S_ISGID


class CheckoutConflictError(SapwoodError):
    """An entry in DEST stands where the commit needs something else."""


class SubpathNotADirectoryError(UsageError):
    """``CheckoutOptions.subpath`` names a file of the commit, not a directory."""

    def __init__(self, message: str = "", *, subpath: str = ""):
        super().__init__(message or f"subpath {subpath}: is not a directory")
        self.subpath = subpath


class CheckoutError(SapwoodError):
    """A system call failed during a union checkout; the message says what DEST holds."""


@dataclass
class CheckoutOptions:
    """How to check out: hardlinks or copies, user mode, union modes, a subpath."""

    user_mode: bool = False  # -U: owned by the caller, no setuid/setgid, no xattrs
    copy: bool = False  # -C: never hardlink
    require_hardlinks: bool = False  # -H: never fall back to copying
    union: Union = "none"
    subpath: str = "/"
    whiteouts: bool = False  # .wh.NAME deletes NAME instead of being checked out
    fsync: bool = True
    verify: bool = False  # re-hash objects before hardlinking them (copies always are)


@dataclass
class CheckoutStats:
    """What a checkout made: hardlinks, copies, symlinks, directories, removals."""

    hardlinks: int = 0
    copies: int = 0
    symlinks: int = 0
    directories: int = 0
    skipped: int = 0
    removed: int = 0  # entries of DEST removed by whiteouts


def file_mode(options: CheckoutOptions, recorded: int) -> int:
    """Permission bits of a checked-out regular file: the recorded ones, or in user mode
    those without setuid, setgid, sticky and world-write (what a hardlink to a bare-user
    object shows too: copies and farm files agree)."""
    return user_checkout_mode(recorded) if options.user_mode else stat.S_IMODE(recorded)


def user_dir_mode(recorded: int) -> int:
    """Permission bits of a directory in a user-mode checkout: no setuid and setgid."""
    return stat.S_IMODE(recorded) & ~_SETID


def dir_mode(options: CheckoutOptions, recorded: int) -> int:
    """Permission bits of a checked-out directory: the recorded ones (user mode: see
    :func:`user_dir_mode`)."""
    return user_dir_mode(recorded) if options.user_mode else stat.S_IMODE(recorded)


def apply_meta(
    fd: int,
    options: CheckoutOptions,
    owner: tuple[int, int],
    xattrs: tuple[tuple[bytes, bytes], ...],
    bits: int,
) -> None:
    """Give a created file or directory its recorded owner and xattrs (not in user
    mode: the checkout is the caller's), the permission ``bits`` and mtime 0."""
    if not options.user_mode:
        os.fchown(fd, *owner)
        for key, value in xattrs:
            os.setxattr(fd, key, value)
    os.fchmod(fd, bits)
    os.utime(fd, ns=(0, 0))


def check_options(repo: Repository, options: CheckoutOptions) -> None:
    """Refuse contradictory options, and what the repository's mode cannot do."""
    if options.union not in get_args(Union):  # any other word was taken for "union"
        raise UsageError(
            f"union mode {options.union!r}: not one of 'none', 'union', 'add', 'identical'"
        )
    if options.union == "identical" and not options.require_hardlinks:
        raise UsageError("union mode 'identical' needs require_hardlinks")
    if options.copy and options.require_hardlinks:
        raise UsageError("copy and require_hardlinks contradict each other")
    if not options.user_mode and os.geteuid() != 0:
        raise PermissionDeniedError(
            "a checkout with the recorded ownership needs root; set user_mode"
        )
    if options.require_hardlinks:
        if repo.mode is RepoMode.ARCHIVE:
            raise UsageError("an archive repository stores compressed objects: it cannot hardlink")
        if repo.mode is RepoMode.BARE and options.user_mode:
            raise UsageError(
                "a bare repository "
                "cannot hardlink in user mode; drop require_hardlinks or user_mode"
            )
        if repo.mode is not RepoMode.BARE and not options.user_mode:
            raise UsageError(
                f"a {repo.mode.value} repository hardlinks only in user mode: set user_mode"
            )
