"""How a commit is shown: git's text layout, or one JSON object (log and show)."""

from __future__ import annotations

from typing import Any

from sapwood import Commit, ObjectId, Signature
from sapwood.cli.output import format_time, printable, text_lines


def commit_json(commit_id: ObjectId, commit: Commit) -> dict[str, Any]:
    """The fields of a commit as `log --json` and `show --json` print them."""
    return {
        "commit": commit_id.hex(),
        "parent": commit.parent.hex() if commit.parent else None,
        "timestamp": commit.timestamp,
        "subject": commit.subject,
        "body": commit.body,
        "metadata": dict(commit.metadata),
        "tree": commit.tree.hex(),
        "meta": commit.meta.hex(),
    }


def print_commit(
    commit_id: ObjectId, commit: Commit, full: bool, signatures: tuple[Signature, ...] = ()
) -> None:
    """git's layout: header lines, then the message indented. Text from the commit is
    made printable (tabs and UTF-8 kept, control characters escaped), so a subject or
    metadata value can neither forge a header line nor drive the terminal."""
    print(f"commit {commit_id.hex()}")
    if commit.parent:
        print(f"Parent:  {commit.parent.hex()}")
    print(f"Date:  {format_time(commit.timestamp)}")
    if commit.version:
        print(f"Version: {printable(commit.version)}")
    if full:
        print(f"Tree:  {commit.tree.hex()} {commit.meta.hex()}")
        for key, value in commit.metadata:
            if key != "version":
                print(f"Metadata: {printable(key)}={printable(value)}")
        for sig in signatures:  # which keys signed it (show)
            state = "good" if sig.verifies(commit.encode()) else "BAD"
            print(f"Signed-by: {sig.key} ({state} signature)")
    print()
    for text in (commit.subject, commit.body):
        if text:
            for line in text_lines(text):
                print(f"    {line}")
            print()
