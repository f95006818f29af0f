"""show, ls, cat, diff: reading what a repository holds (log is log_cmd's)."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sapwood import (
    DiffStat,
    DirStat,
    Node,
    ObjectId,
    PathNotFoundError,
    Repository,
    UsageError,
    children,
    commit_signatures,
    commit_stat,
    diff_directory,
    diff_stat,
    diff_trees,
    lookup,
    rev_parse,
    root_node,
    walk,
)
from sapwood.cli.commit_view import commit_json, print_commit
from sapwood.cli.context import open_repo
from sapwood.cli.output import (
    emit_json,
    mode_string,
    quote_path,
    show_bytes,
)
from sapwood.cli.separator import keep_separator, paths_after_separator


def register(commands: Any) -> None:
    show = commands.add_parser("show", help="one commit")
    show.add_argument("rev")
    show.add_argument("--json", action="store_true")
    show.add_argument(
        "--stat", action="store_true", help=f"then what it changed from its parent: {_STAT_HELP}"
    )
    show.set_defaults(func=cmd_show)

    ls = commands.add_parser("ls", help="list a path of a commit")
    ls.add_argument("-R", "--recursive", action="store_true", help="list everything below")
    ls.add_argument("-X", "--xattrs", action="store_true", help="show extended attributes")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("rev")
    ls.add_argument("path", nargs="?", default="/")
    ls.set_defaults(func=cmd_ls)

    cat = commands.add_parser("cat", help="write a file of a commit to stdout")
    cat.add_argument("rev")
    cat.add_argument("path")
    cat.set_defaults(func=cmd_cat)
    _register_diff(commands)


def _register_diff(commands: Any) -> None:
    diff = commands.add_parser(
        "diff", help="A/M/D lines between two commits, or a commit and a directory"
    )
    diff.add_argument("old", help="a commit")
    diff.add_argument("new", help="a commit, or an existing directory (a checkout, say)")
    diff.add_argument("--json", action="store_true")
    diff.add_argument(
        "-U",
        "--user-mode",
        action="store_true",
        help="NEW is a user-mode checkout: compare the bits it shows, not owners",
    )
    diff.add_argument("--stat", action="store_true", help=f"two commits: {_STAT_HELP}")
    diff.add_argument(
        "paths",
        nargs="*",
        metavar="-- PATH",
        help="only the changes at or below these paths (of two commits)",
    )
    keep_separator(diff)
    diff.set_defaults(func=cmd_diff)


_STAT_HELP = (
    "per top-level directory, entries (files, symlinks, directories) added, modified and "
    "deleted, and content bytes added and removed (a modified file's old size removed, "
    "its new size added; lines are not counted), then a total line"
)


# ----- show -----------------------------------------------------------------------
def cmd_show(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        commit_id = rev_parse(repo, args.rev)
        commit = repo.read_commit(commit_id)
        signatures = commit_signatures(repo, commit_id)
        stat = commit_stat(repo, commit_id) if args.stat else None
    if args.json:
        signers = [{"key": s.key, "valid": s.verifies(commit.encode())} for s in signatures]
        shown = {**commit_json(commit_id, commit), "signatures": signers}
        emit_json(shown if stat is None else {**shown, "stat": _stat_json(stat)})
    else:
        print_commit(commit_id, commit, full=True, signatures=signatures)
        if stat is not None:
            _print_stat(stat)
    return 0


# ----- ls and cat ------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    """What ls shows of one node, with names still as bytes."""

    path: bytes
    mode: int
    uid: int
    gid: int
    size: int
    object_id: ObjectId
    target: bytes
    xattrs: tuple[tuple[bytes, bytes], ...]

    def json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "path": show_bytes(self.path),
            "mode": mode_string(self.mode),
            "uid": self.uid,
            "gid": self.gid,
            "size": self.size,
            "id": self.object_id.hex(),
        }
        if self.target:
            entry["target"] = show_bytes(self.target)
        entry["xattrs"] = {show_bytes(k): v.hex() for k, v in self.xattrs}
        return entry

    def line(self, with_xattrs: bool) -> str:
        """Names quoted as GNU ls quotes them, so a name holding a newline, ' -> ' or an
        escape sequence shows as what it is."""
        line = (
            f"{mode_string(self.mode)} {self.uid} {self.gid} {self.size:>8} {quote_path(self.path)}"
        )
        if self.target:
            line += f" -> {quote_path(self.target)}"
        if with_xattrs and self.xattrs:
            pairs = (f"{quote_path(k)}={v.hex()}" for k, v in self.xattrs)
            line += " { " + ", ".join(pairs) + " }"
        return line


def _describe(repo: Repository, node: Node) -> _Entry:
    if node.dir is not None:
        meta = repo.read_dirmeta(node.dir.meta)
        return _Entry(node.path, meta.mode, meta.uid, meta.gid, 0, node.dir.tree, b"", meta.xattrs)
    assert node.file is not None
    header, size = repo.read_file_header(node.file)
    return _Entry(
        node.path,
        header.mode,
        header.uid,
        header.gid,
        size,
        node.file,
        header.symlink_target,
        header.xattrs,
    )


def cmd_ls(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        node = lookup(repo, rev_parse(repo, args.rev), args.path)
        if args.recursive:
            nodes = list(walk(repo, node))
        elif node.dir is not None:
            nodes = [node, *children(repo, node)]
        else:
            nodes = [node]
        entries = [_describe(repo, n) for n in nodes]
    if args.json:
        emit_json([entry.json() for entry in entries])
    else:
        for entry in entries:
            print(entry.line(args.xattrs))
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        node = lookup(repo, rev_parse(repo, args.rev), args.path)
        if node.file is None:
            raise PathNotFoundError(f"{quote_path(args.path)}: is a directory")
        header, _ = repo.read_file_header(node.file)
        if header.is_symlink:
            raise PathNotFoundError(
                f"{quote_path(args.path)}: is a symlink to {quote_path(header.symlink_target)}"
            )
        with repo.open_file(node.file) as stream, _spool() as verified:
            shutil.copyfileobj(stream, verified)  # raises at the end if the bytes are wrong
            verified.seek(0)
            shutil.copyfileobj(verified, sys.stdout.buffer)
    return 0


def _spool() -> tempfile.SpooledTemporaryFile[bytes]:
    """Where cat keeps a file until it is verified: wrong bytes never reach stdout.
    In memory up to 64 MiB, beyond in an unlinked temporary file."""
    return tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)


_SPOOL_IN_MEMORY = 64 << 20


# ----- diff -------------------------------------------------------------------------
def cmd_diff(args: argparse.Namespace) -> int:
    paths = paths_after_separator(args, "diff A B -- PATH...", [args.old, args.new])
    with open_repo(args) as repo:
        old = root_node(repo, rev_parse(repo, args.old))
        if Path(args.new).is_dir():
            _refuse_with_directory(args, paths)
            changes = list(diff_directory(repo, old, Path(args.new), user_mode=args.user_mode))
        elif args.user_mode:
            raise UsageError(f"{args.new}: -U compares a commit with a directory, not a commit")
        else:
            new = root_node(repo, rev_parse(repo, args.new))
            if args.stat:
                return _show_stat(diff_stat(repo, old, new, paths), args.json)
            changes = list(diff_trees(repo, old, new, paths))
    if args.json:
        emit_json([{"change": c.kind, "path": show_bytes(c.path)} for c in changes])
    else:
        for change in changes:
            print(f"{change.kind}    {quote_path(change.path)}")
    return 0


def _refuse_with_directory(args: argparse.Namespace, paths: list[str] | None) -> None:
    """--stat and -- PATH compare two commits (a directory's side is not counted)."""
    if args.stat:
        raise UsageError(
            f"{args.new}: diff --stat compares two commits, not a commit and a directory"
        )
    if paths is not None:
        raise UsageError(
            f"{args.new}: diff -- PATH compares two commits, not a commit and a directory"
        )


# ----- --stat, of diff and show -------------------------------------------------------
_STAT_COLUMNS = ("added", "modified", "deleted", "+bytes", "-bytes")


def _show_stat(stat: DiffStat, as_json: bool) -> int:
    if as_json:
        emit_json(_stat_json(stat))
    else:
        _print_stat(stat)
    return 0


def _counts(line: DirStat) -> tuple[int, ...]:
    return (line.added, line.modified, line.deleted, line.bytes_added, line.bytes_removed)


def _stat_json(stat: DiffStat) -> dict[str, Any]:
    def counts(line: DirStat) -> dict[str, int]:
        keys = ("added", "modified", "deleted", "bytes_added", "bytes_removed")
        return dict(zip(keys, _counts(line), strict=True))

    return {
        "directories": [{"path": show_bytes(d.path), **counts(d)} for d in stat.directories],
        "total": counts(stat.total),
    }


def _print_stat(stat: DiffStat) -> None:
    """One line per top-level directory, then the total; nothing when nothing changed.
    Numbers right-aligned under their heading, the directory last (quoted as ls
    quotes names, so "total" can only be the total line)."""
    if not stat.directories:
        return
    rows = [(_counts(d), quote_path(d.path)) for d in stat.directories]
    rows.append((_counts(stat.total), "total"))
    widths = [
        max(len(head), *(len(str(counts[i])) for counts, _ in rows))
        for i, head in enumerate(_STAT_COLUMNS)
    ]
    print("  ".join(h.rjust(w) for h, w in zip(_STAT_COLUMNS, widths, strict=True)) + "  directory")
    for counts, name in rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(counts, widths, strict=True)) + f"  {name}")
