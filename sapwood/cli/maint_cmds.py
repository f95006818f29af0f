"""fsck and prune: keeping a repository sound and small."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from sapwood import SapwoodError, from_hex, fsck, prune, rev_parse
from sapwood.cli.context import open_repo
from sapwood.cli.output import emit_json, parse_time, plural, printable
from sapwood.cli.progress import Progress

if TYPE_CHECKING:
    from sapwood import FsckReport, PruneReport


def register(commands: Any) -> None:
    check = commands.add_parser("fsck", help="re-hash objects and check the repository")
    check.add_argument("--all", action="store_true", help="every object, not only what refs need")
    check.add_argument(
        "--delete", action="store_true", help="remove corrupt objects; mark commits partial"
    )
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_fsck)

    p = commands.add_parser("prune", help="delete objects no root needs")
    p.add_argument("--refs-only", action="store_true", help="only refs (and history) are roots")
    p.add_argument("--depth", type=_depth, default=-1, help="parents kept per ref (-1: all)")
    p.add_argument(
        "--keep-younger-than",
        metavar="DATE",
        help="drop older commits (not heads); DATE as in REV@{DATE}",
    )
    p.add_argument("--delete-commit", action="append", default=[], metavar="ID")
    p.add_argument("--dry-run", action="store_true", help="say what would go; delete nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_prune)


def _depth(text: str) -> int:
    try:
        depth = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if depth < -1:
        raise argparse.ArgumentTypeError(f"{depth}: give -1 (all) or a number of parents")
    return depth


class FsckFailed(SapwoodError):
    """fsck found problems (already listed on stdout)."""


def cmd_fsck(args: argparse.Namespace) -> int:
    with open_repo(args) as repo, Progress("fsck") as progress:
        report = fsck(repo, all_objects=args.all, delete=args.delete, progress=progress.task)
    if args.json:
        emit_json(_fsck_json(report))
    else:
        _print_fsck(report)
    sys.stdout.flush()
    if not report.clean:
        count = len(report.problems) + len(report.partial)
        raise FsckFailed(
            f"fsck found {plural(count, 'problem')}"
            + (", deleted the corrupt objects" if report.deleted else "")
        )
    return 0


def _fsck_json(report: FsckReport) -> dict[str, Any]:
    return {
        "commits": report.commits,
        "metadata_objects": report.metadata_objects,
        "file_objects": report.file_objects,
        "problems": [
            {
                "object": p.object_id.hex(),
                "message": p.message,
                "needed_by": [c.hex() for c in p.needed_by],
            }
            for p in report.problems
        ],
        "partial": [c.hex() for c in report.partial],
        "completed": [c.hex() for c in report.completed],
        "deleted": [c.hex() for c in report.deleted],
        "orphan_files": report.orphan_files,
        "writer_running": report.writer_running,
    }


def _print_fsck(report: FsckReport) -> None:
    for problem in report.problems:
        print(f"error: {printable(problem.describe())}")
    for commit_id in report.completed:
        print(f"commit {commit_id.hex()} is complete again")
    for commit_id in report.partial:
        print(f"error: commit {commit_id.hex()} is partial (objects were deleted)")
    print(
        f"checked {plural(report.commits, 'commit')}, {report.metadata_objects} metadata "
        f"and {plural(report.file_objects, 'file object')}"
        + _unlisted(report.orphan_files, report.writer_running)
    )


def _unlisted(count: int, writer_running: bool) -> str:
    """The end of fsck --all's line: files in objects/ the index does not list. Beside
    a running commit or pull they may be its, published a moment before it lists them."""
    if not count:
        return ""
    if writer_running:
        return (
            f"; {plural(count, 'unlisted file')} (a commit or pull is running: they may be "
            "its, not yet listed; prune removes only leftovers)"
        )
    return f"; {plural(count, 'unlisted file')} (prune removes them)"


def cmd_prune(args: argparse.Namespace) -> int:
    with open_repo(args) as repo, Progress("prune") as progress:
        doomed = tuple(
            from_hex(text) if len(text) == 64 else rev_parse(repo, text)
            for text in args.delete_commit
        )
        report = prune(
            repo,
            refs_only=args.refs_only,
            depth=args.depth,
            keep_younger_than=parse_time(args.keep_younger_than)
            if args.keep_younger_than is not None
            else None,
            delete_commits=doomed,
            dry_run=args.dry_run,
            progress=progress.task,
        )
    if args.json:
        emit_json(_prune_json(report))
    else:
        _print_prune(report)
    return 0


def _prune_json(report: PruneReport) -> dict[str, Any]:
    return {
        "total_objects": report.total_objects,
        "deleted_objects": report.objects,
        "deleted_commits": [c.hex() for c in report.commits],
        "orphan_files": report.orphan_files,
        "bytes_freed": report.bytes_freed,
        "dry_run": report.dry_run,
    }


def _print_prune(report: PruneReport) -> None:
    verb = "Would delete" if report.dry_run else "Deleted"
    print(f"Total objects: {report.total_objects}")
    for commit_id in report.commits:
        print(f"{verb} commit {commit_id.hex()}")
    print(
        f"{verb} {plural(report.objects, 'object')} and "
        f"{plural(report.orphan_files, 'unlisted file')}, "
        f"{plural(report.bytes_freed, 'byte')} freed"
    )
