"""commit: record a tree (directories, tars, existing commits overlaid) on a branch."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sapwood import (
    NO_PARENT,
    U32_MAX,
    CommitStats,
    ContentOptions,
    Layer,
    NoParent,
    NothingToCommitError,
    ObjectId,
    Repository,
    UsageError,
    check_ref_name,
    commit,
    rev_parse,
)
from sapwood.cli.content_files import parse_skip_list, parse_statoverride
from sapwood.cli.context import open_repo
from sapwood.cli.output import parse_time
from sapwood.cli.progress import Progress

_LAYER_KINDS = {"dir": Layer.directory, "tar": Layer.tar, "ref": Layer.commit}


def owner_id(text: str) -> int:
    """A uid or gid argument: refused by argparse, naming the option, unless 0..2^32-1."""
    if not text.isascii() or not text.isdigit() or len(text) > 10 or int(text) > U32_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is not a uid or gid (0 to {U32_MAX})")
    return int(text)


def utf8_text(text: str) -> str:
    """Commit text arrives decoded with surrogateescape; bytes that are not UTF-8 are
    refused now, naming the option, rather than after the tree has been scanned."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError("not valid UTF-8 text") from None
    return text


def register(commands: Any) -> None:
    p = commands.add_parser("commit", help="commit a tree to a branch; prints the commit id")
    p.add_argument("-b", "--branch", required=True, help="the ref to move to the new commit")
    p.add_argument("-s", "--subject", type=utf8_text, default="", help="one-line subject")
    p.add_argument("-m", "--body", type=utf8_text, default="", help="full description")
    p.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="dir=PATH|tar=PATH|ref=REV",
        help="a layer of the tree; repeat to overlay in order",
    )
    p.add_argument("--parent", help="parent commit REV, or 'none' (default: the branch's head)")
    p.add_argument(
        "--add-metadata-string",
        action="append",
        type=utf8_text,
        default=[],
        metavar="KEY=VALUE",
        help="add a metadata string (e.g. version=1.0)",
    )
    p.add_argument("--owner-uid", type=owner_id, help="record every entry as owned by this uid")
    p.add_argument("--owner-gid", type=owner_id, help="record every entry as owned by this gid")
    p.add_argument(
        "--canonical-permissions",
        action="store_true",
        help="uid and gid 0, permission bits limited to 0755",
    )
    p.add_argument(
        "--statoverride",
        type=Path,
        metavar="FILE",
        help="lines of '+MODE PATH' or '=MODE PATH' adjusting modes",
    )
    p.add_argument("--skip-list", type=Path, metavar="FILE", help="paths (one a line) to leave out")
    p.add_argument(
        "--skip-special",
        action="store_true",
        help="skip device nodes, fifos and sockets instead of failing",
    )
    p.add_argument(
        "--skip-if-unchanged",
        action="store_true",
        help="make no commit if the tree equals the parent's",
    )
    p.add_argument(
        "--read-all",
        action="store_true",
        help="read every file, trusting no stat cache (after a crash: a file written in "
        "place may keep its old timestamps)",
    )
    p.add_argument(
        "--timestamp", help="commit time: seconds since the epoch, ISO 8601, or as REV@{DATE}"
    )
    p.add_argument("path", nargs="?", help="directory to commit (same as --tree=dir=PATH)")
    p.set_defaults(func=cmd_commit)


def _metadata(pairs: list[str]) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--add-metadata-string {pair}: expected KEY=VALUE")
        metadata[key] = value
    return metadata


def _options(args: argparse.Namespace) -> ContentOptions:
    return ContentOptions(
        owner_uid=args.owner_uid,
        owner_gid=args.owner_gid,
        canonical_permissions=args.canonical_permissions,
        statoverride=parse_statoverride(args.statoverride) if args.statoverride else {},
        skip=parse_skip_list(args.skip_list) if args.skip_list else frozenset(),
        skip_special=args.skip_special,
    )


def _layer(spec: str) -> Layer:
    """``dir=PATH``, ``tar=PATH`` or ``ref=REV``, as in --tree."""
    kind, sep, source = spec.partition("=")
    if not sep or kind not in _LAYER_KINDS or not source:
        raise UsageError(f"--tree={spec}: expected dir=PATH, tar=PATH or ref=REV")
    return _LAYER_KINDS[kind](source)


def _parent(repo: Repository, text: str | None) -> ObjectId | NoParent | None:
    if text is None:
        return None
    return NO_PARENT if text == "none" else rev_parse(repo, text)


def cmd_commit(args: argparse.Namespace) -> int:
    layers = [_layer(spec) for spec in args.tree]
    if args.path:
        layers.append(Layer.directory(args.path))
    metadata = _metadata(args.add_metadata_string)
    timestamp = parse_time(args.timestamp) if args.timestamp is not None else None
    options = _options(args)
    with open_repo(args) as repo, Progress("commit") as progress:
        # The branch and the layers are refused before --parent is resolved, as always.
        check_ref_name(args.branch)
        if not layers:
            raise NothingToCommitError("nothing to commit: no layers given")
        result = commit(
            repo,
            args.branch,
            layers,
            subject=args.subject,
            body=args.body,
            metadata=metadata,
            parent=_parent(repo, args.parent),
            timestamp=timestamp,
            skip_if_unchanged=args.skip_if_unchanged,
            read_all=args.read_all,
            options=options,
            progress=progress.count,
        )
        progress.finish(_files_summary(result.stats))
    print(result.commit_id.hex())
    return 0


def _files_summary(stats: CommitStats) -> str:
    """What the files of a commit cost: read, vouched for by the stat cache, or linked."""
    count = stats.files_read + stats.cache_hits + stats.linked
    return (
        f"{count} file{'' if count == 1 else 's'} ({stats.files_read} read, "
        f"{stats.cache_hits} cached, {stats.linked} linked)"
    )
