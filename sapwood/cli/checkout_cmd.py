"""checkout: make a commit real on disk (a hardlink farm, or copies)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sapwood import CheckoutOptions, Union, UsageError, checkout, rev_parse
from sapwood.cli.context import open_repo
from sapwood.cli.progress import Progress


def register(commands: Any) -> None:
    p = commands.add_parser(
        "checkout",
        help="check a commit out into a new directory",
        description=(
            "Check a commit out into DEST: hardlinks to the repository's objects where the "
            "mode allows, copies elsewhere. Copied files are hashed as they are copied and "
            "the checkout fails on an object that does not match its id. Hardlinked files "
            "are the objects themselves: each is checked to be a regular file of the "
            "recorded size, but its content is not re-hashed unless --verify is given "
            "(sapwood fsck re-hashes the whole repository). Without a union option DEST "
            "must not exist, and a failed checkout leaves none; a union checkout first "
            "checks what it can without writing (conflicts, whiteouts, and with --verify "
            "the objects), and says so when a later failure leaves DEST partly updated."
        ),
    )
    p.add_argument(
        "-U",
        "--user-mode",
        action="store_true",
        help="files owned by you, no setuid/setgid/sticky or world-write bits, no xattrs",
    )
    p.add_argument(
        "-C",
        "--force-copy",
        action="store_true",
        help="copy instead of hardlinking (every copy is verified against its object's id)",
    )
    p.add_argument(
        "-H",
        "--require-hardlinks",
        action="store_true",
        help="fail rather than copy when a file cannot be hardlinked",
    )
    union = p.add_mutually_exclusive_group()
    union.add_argument(
        "--union", action="store_true", help="write into DEST; the commit's files win"
    )
    union.add_argument("--union-add", action="store_true", help="write into DEST; DEST's files win")
    union.add_argument(
        "--union-identical",
        action="store_true",
        help="write into DEST; existing files must be identical (needs -H)",
    )
    p.add_argument("--subpath", default="/", help="check out only this directory of the commit")
    p.add_argument(
        "--whiteouts",
        action="store_true",
        help="a .wh.NAME file deletes NAME (never '.' or '..', never through a symlink or "
        "into a mount point) from what DEST held before; refused if NAME is not a valid name",
    )
    p.add_argument("--fsync", default="true", choices=["true", "false"], help="sync at the end")
    p.add_argument(
        "--verify",
        action="store_true",
        help="also re-hash each object before hardlinking it (hardlinked files are otherwise "
        "checked for type and size only; copies are always re-hashed)",
    )
    p.add_argument("rev")
    p.add_argument("dest", type=Path)
    p.set_defaults(func=cmd_checkout)


def cmd_checkout(args: argparse.Namespace) -> int:
    union: Union = "none"
    if args.union:
        union = "union"
    elif args.union_add:
        union = "add"
    elif args.union_identical:
        union = "identical"
    options = CheckoutOptions(
        user_mode=args.user_mode,
        copy=args.force_copy,
        require_hardlinks=args.require_hardlinks,
        union=union,
        subpath=args.subpath,
        whiteouts=args.whiteouts,
        fsync=args.fsync == "true",
        verify=args.verify,
    )
    if args.dest.resolve() == Path("/"):
        raise UsageError("refusing to check out over /")
    with open_repo(args) as repo, Progress("checkout") as progress:
        checkout(repo, rev_parse(repo, args.rev), args.dest, options, progress=progress.task)
    return 0
