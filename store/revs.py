"""Revisions: what a user types to name a commit, and walking history.

A REV is a ref name, a full id, a unique id prefix of at least 4 hex digits,
optionally followed by ``^`` (parent, repeatable) or ``~N`` (N-th ancestor).
A ref of the same name wins over an id prefix, and a full id wins over a ref.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from store.errors import AmbiguousRevError, RefNotFoundError
from store.ids import ObjectId, is_full_hex, is_hex_prefix
from store.objects import Commit
from store.repo import Repository

_SUFFIX = re.compile(r"(\^+|~\d*)$")


def rev_parse(repo: Repository, rev: str) -> ObjectId:
    """The commit id that ``rev`` names; raises RefNotFoundError or AmbiguousRevError."""
    base, steps = _split_suffixes(rev)
    commit_id = _resolve_base(repo, base, rev)
    for _ in range(steps):
        parent = repo.read_commit(commit_id).parent
        if parent is None:
            raise RefNotFoundError(f"{rev}: commit {commit_id.hex()[:12]} has no parent")
        commit_id = parent
    return commit_id


def _split_suffixes(rev: str) -> tuple[str, int]:
    steps = 0
    while (match := _SUFFIX.search(rev)) and match.start() > 0:
        text = match.group(1)
        steps += len(text) if text.startswith("^") else int(text[1:] or "1")
        rev = rev[: match.start()]
    return rev, steps


def _resolve_base(repo: Repository, base: str, rev: str) -> ObjectId:
    with repo.index.reader() as reader:
        if is_full_hex(base):
            commit_id = ObjectId(bytes.fromhex(base))
            if reader.object(commit_id) is None and reader.ref(base) is None:
                raise RefNotFoundError(f"no commit {base} in this repository")
            return commit_id
        ref = reader.ref(base)
        if ref is not None:
            return ref
        if is_hex_prefix(base.lower()):
            matches = reader.commits_with_prefix(base.lower())
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise AmbiguousRevError(
                    f"{base}: id prefix matches several commits; type more digits"
                )
    raise RefNotFoundError(f"{rev}: no such ref or commit")


def history(repo: Repository, commit_id: ObjectId) -> Iterator[tuple[ObjectId, Commit]]:
    """The commit and its ancestors, newest first; stops at a missing parent."""
    current: ObjectId | None = commit_id
    while current is not None:
        if not repo.has_object(current):
            return  # history truncated (pulled with a depth, or pruned)
        commit = repo.read_commit(current)
        yield current, commit
        current = commit.parent
