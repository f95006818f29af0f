"""log: a commit and its ancestors, newest first."""

from __future__ import annotations

import argparse
from typing import Any

from sapwood import history, rev_parse
from sapwood.cli.commit_view import commit_json, print_commit
from sapwood.cli.context import open_repo
from sapwood.cli.output import emit_json


def register(commands: Any) -> None:
    log = commands.add_parser("log", help="a commit and its ancestors")
    log.add_argument("rev")
    log.add_argument("--json", action="store_true")
    log.set_defaults(func=cmd_log)


def cmd_log(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        entries = list(history(repo, rev_parse(repo, args.rev)))
    if args.json:
        emit_json([commit_json(cid, c) for cid, c in entries])
    else:
        for cid, commit in entries:
            print_commit(cid, commit, full=False)
    return 0
