"""log: a commit and its ancestors, newest first; with ``-- PATH...`` only the commits
that changed those paths, with -p their diffs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

from sapwood import (
    Commit,
    Node,
    ObjectId,
    Repository,
    history,
    path_history,
    rev_parse,
    root_node,
)
from sapwood.cli.commit_view import commit_json, print_commit
from sapwood.cli.context import open_repo
from sapwood.cli.output import emit_json, show_bytes
from sapwood.cli.patch_view import patch, patch_chunks
from sapwood.cli.separator import keep_separator, paths_after_separator

# what log shows of one commit: its id, the commit, and (path, old, new) of each change
_Changes = tuple[tuple[bytes, Node | None, Node | None], ...]


def register(commands: Any) -> None:
    log = commands.add_parser(
        "log",
        help="a commit and its ancestors (with -- PATH...: those that changed the paths)",
    )
    log.add_argument("rev")
    log.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="after --: only the commits that changed these files or directories",
    )
    log.add_argument("--json", action="store_true")
    log.add_argument(
        "-p",
        "--patch",
        action="store_true",
        help="the unified diff of each commit against its parent (of the PATHs only)",
    )
    log.set_defaults(func=cmd_log)
    keep_separator(log)


def cmd_log(args: argparse.Namespace) -> int:
    paths = paths_after_separator(args, "log REV -- PATH...", [args.rev]) or []
    if not paths and not args.patch:
        return _plain_log(args)
    with open_repo(args) as repo:
        entries = _entries(repo, rev_parse(repo, args.rev), paths)
        if args.json:
            diffs = ((entry, _patch(repo, entry[2]) if args.patch else b"") for entry in entries)
            emit_json([_json(entry, diff, args) for entry, diff in diffs])
            return 0
        for commit_id, commit, changes in entries:  # as found: `log -p | head` ends early
            print_commit(commit_id, commit, full=False)
            if args.patch:
                _write_patch(repo, changes)
    return 0


def _write_patch(repo: Repository, changes: _Changes) -> None:
    """A commit's diff, a file at a time (the first commit of a tree diffs all of it)."""
    sys.stdout.flush()
    for chunk in patch_chunks(repo, ((old, new) for _, old, new in changes)):
        sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()


def _plain_log(args: argparse.Namespace) -> int:
    """Every commit, as log has always shown them."""
    with open_repo(args) as repo:
        entries = list(history(repo, rev_parse(repo, args.rev)))
    if args.json:
        emit_json([commit_json(cid, c) for cid, c in entries])
    else:
        for cid, commit in entries:
            print_commit(cid, commit, full=False)
    return 0


def _patch(repo: Repository, changes: _Changes) -> bytes:
    return patch(repo, ((old, new) for _, old, new in changes))


def _entries(
    repo: Repository, commit_id: ObjectId, paths: list[str]
) -> Iterator[tuple[ObjectId, Commit, _Changes]]:
    """The commits to show, each with its changes: of the paths, or of the whole tree."""
    if paths:
        for entry in path_history(repo, commit_id, paths):
            yield (
                entry.commit_id,
                entry.commit,
                tuple((c.path, c.old, c.new) for c in entry.changes),
            )
        return
    for current_id, commit in history(repo, commit_id):
        yield current_id, commit, ((b"/", _parent_root(repo, commit), root_node(repo, current_id)),)


def _parent_root(repo: Repository, commit: Commit) -> Node | None:
    """The parent's root, None for a root commit or a parent history does not reach."""
    if commit.parent is None or not repo.has_object(commit.parent):
        return None
    return root_node(repo, commit.parent)


def _json(
    entry: tuple[ObjectId, Commit, _Changes], diff: bytes, args: argparse.Namespace
) -> dict[str, Any]:
    commit_id, commit, changes = entry
    shown = commit_json(commit_id, commit)
    if args.paths:
        shown["paths"] = [show_bytes(path) for path, *_ in changes]
    if args.patch:
        shown["patch"] = diff.decode("utf-8", "backslashreplace")
    return shown
