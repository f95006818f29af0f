"""release-check: release diffs, builds read through a mount, and a setuid gate.

An example of a program built on sapwood from outside: it uses ``import sapwood`` and
nothing else of sapwood (docs/api.md is the guide it follows). Subcommands:

- ``publish REPO BRANCH DIR FILE``: commit DIR on BRANCH (creating REPO, bare-user, if
  it does not exist), mount the new commit read-only and print FILE read through the
  mount;
- ``changes REPO OLD NEW [PATH]``: what changed below PATH (default /etc) from release
  OLD to release NEW, one ``A``, ``M`` or ``D`` line per path, with the contents of added
  directories;
- ``gate REPO REV``: exit 1, naming each, if commit REV brings in a setuid file that
  its parent did not have; 0 otherwise.

Any sapwood error is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import itertools
import os
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import sapwood

PROG = "release-check"
DESCRIPTION = "Release diffs, builds read through a mount, and a setuid gate, on sapwood."


def open_or_create(path: Path) -> sapwood.Repository:
    """The repository at ``path``; a new bare-user one if nothing is there."""
    if not path.exists():
        return sapwood.Repository.init(path, sapwood.RepoMode.BARE_USER)
    return sapwood.Repository.open(path)


def publish(repo_path: Path, branch: str, source: Path, show: str) -> int:
    """Commit ``source`` on ``branch``, then read ``show`` back through a mount of it."""
    with open_or_create(repo_path) as repo:
        result = sapwood.commit(
            repo, branch, source, subject=f"publish {source.name}", skip_if_unchanged=True
        )
    # Closed before mounting: the mount's daemon is forked from this process, and an
    # open repository must not cross a fork.
    commit_hex = result.commit_id.hex()
    print(f"{branch} {commit_hex}" + ("" if result.created else " (unchanged)"))
    with tempfile.TemporaryDirectory(prefix=f"{PROG}-") as tmp:
        mountpoint = Path(tmp)
        with sapwood.mount(repo_path, mountpoint, commit_hex):
            content = (mountpoint / show.lstrip("/")).read_bytes()
    print(f"{show}: {content.decode(errors='replace').rstrip()}")
    return 0


def changes(repo_path: Path, old_rev: str, new_rev: str, path: str) -> int:
    """Print the changes below ``path`` between two commits, in path order."""
    with sapwood.Repository.open(repo_path) as repo:
        old = sapwood.lookup(repo, sapwood.rev_parse(repo, old_rev), path)
        new = sapwood.lookup(repo, sapwood.rev_parse(repo, new_rev), path)
        if not (old.is_dir and new.is_dir):
            print(f"{PROG}: {path}: not a directory in both commits", file=sys.stderr)
            return 2
        for change in sapwood.diff_trees(repo, old, new):
            print(change.kind, os.fsdecode(change.path))
            if change.kind == "A" and change.new is not None and change.new.is_dir:
                for node in itertools.islice(sapwood.walk(repo, change.new), 1, None):
                    print("  +", os.fsdecode(node.path))
    return 0


def brought_in(repo: sapwood.Repository, commit_id: sapwood.ObjectId) -> Iterator[sapwood.Node]:
    """The nodes a commit adds or changes, compared with its parent (all, for a root)."""
    root = sapwood.root_node(repo, commit_id)
    parent = repo.read_commit(commit_id).parent
    if parent is None:
        yield from sapwood.walk(repo, root)
        return
    for change in sapwood.diff_trees(repo, sapwood.root_node(repo, parent), root):
        if change.new is None:
            continue  # deleted
        if change.old is not None and change.old.is_dir and change.new.is_dir:
            continue  # its own metadata changed; its entries' changes are listed too
        yield from sapwood.walk(repo, change.new)  # a file, or all of an added directory


def gate(repo_path: Path, rev: str) -> int:
    """1 if commit ``rev`` brings in setuid files (each named on stderr), else 0."""
    with sapwood.Repository.open(repo_path) as repo:
        found = [
            os.fsdecode(node.path)
            for node in brought_in(repo, sapwood.rev_parse(repo, rev))
            if node.file is not None and repo.read_file_header(node.file)[0].mode & stat.S_ISUID
        ]
    for path in found:
        print(f"{PROG}: {rev} adds a setuid file: {path}", file=sys.stderr)
    if not found:
        print(f"{rev}: no new setuid files")
    return 1 if found else 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    commands = top.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("publish", help="commit a directory and read a file of it mounted")
    sub.add_argument("repo", type=Path)
    sub.add_argument("branch")
    sub.add_argument("source", type=Path)
    sub.add_argument("show", metavar="FILE")
    sub = commands.add_parser("changes", help="what changed between two releases")
    sub.add_argument("repo", type=Path)
    sub.add_argument("old")
    sub.add_argument("new")
    sub.add_argument("path", nargs="?", default="/etc")
    sub = commands.add_parser("gate", help="fail if a commit brings in a setuid file")
    sub.add_argument("repo", type=Path)
    sub.add_argument("rev")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "publish":
            return publish(args.repo, args.branch, args.source, args.show)
        if args.command == "changes":
            return changes(args.repo, args.old, args.new, args.path)
        return gate(args.repo, args.rev)
    except sapwood.SapwoodError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
