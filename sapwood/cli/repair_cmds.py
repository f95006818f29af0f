"""rebuild-index: give an archive repository whose index was lost a new one."""

from __future__ import annotations

import argparse
from typing import Any

from sapwood import rebuild_index
from sapwood.cli.context import repo_path
from sapwood.cli.output import plural, printable


def register(commands: Any) -> None:
    p = commands.add_parser(
        "rebuild-index",
        help="archive repositories: rebuild a missing or damaged index from the object files",
    )
    p.set_defaults(func=cmd_rebuild_index)


def cmd_rebuild_index(args: argparse.Namespace) -> int:
    report = rebuild_index(repo_path(args))
    for line in report.skipped:
        print(f"skipped {printable(line)}")  # names object files found on disk
    for commit_id in report.partial:
        print(f"commit {commit_id.hex()} is partial (objects it needs were not found whole)")
    if report.old_index is not None:
        print(f"the previous index was moved to {report.old_index}")
    print(f"indexed {plural(report.objects, 'object')} and {plural(report.refs, 'ref')}")
    return 0
