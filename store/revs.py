"""Revisions: what a user types to name a commit, and walking history.

A REV is a ref name, a full id, a unique id prefix of at least 4 hex digits,
optionally followed by ``^`` (parent, repeatable) or ``~N`` (N-th ancestor).
A ref of the same name wins over an id prefix, and a full id wins over a ref.
"""

from __future__ import annotations

from collections.abc import Iterator

from store.errors import (
    AmbiguousRevError,
    CorruptObjectError,
    InvalidRefNameError,
    RefNotFoundError,
)
from store.ids import ObjectId, ObjectType, is_full_hex, is_hex_prefix
from store.names import check_ref_name
from store.objects import Commit
from store.repo import Repository

MAX_GENERATIONS = 2**31 - 1  # far beyond any real history; bounds what ~N may ask
_DIGITS = "0123456789"


def rev_parse(repo: Repository, rev: str) -> ObjectId:
    """The commit id that ``rev`` names; raises RefNotFoundError or AmbiguousRevError."""
    base, steps = _split_suffixes(rev)
    commit_id = _resolve_base(repo, base, rev)
    seen = {commit_id}
    for _ in range(steps):
        parent = repo.read_commit(commit_id).parent
        if parent is None:
            raise RefNotFoundError(f"{rev}: commit {commit_id.hex()[:12]} has no parent", rev=rev)
        _no_loop(seen, parent)
        commit_id = parent
    return commit_id


def _no_loop(seen: set[ObjectId], parent: ObjectId) -> None:
    """A commit's id covers its parent's, so history cannot loop unless the index was
    tampered with: say so instead of walking forever."""
    if parent in seen:
        raise CorruptObjectError(
            f"the history loops back to commit {parent.hex()}: the index is damaged"
        )
    seen.add(parent)


def _split_suffixes(rev: str) -> tuple[str, int]:
    """(base, generations) of ``rev``: its ``^`` and ``~N`` suffixes, read from the right.

    One pass over the text (a hostile REV of many suffixes costs linear time), ASCII
    digits only, and a count above MAX_GENERATIONS is refused before it is converted
    (Python refuses to convert more than 4300 digits, and no history is that long).
    """
    steps, end = 0, len(rev)
    while end > 1:
        if rev[end - 1] == "^":
            steps, end = steps + 1, end - 1
            continue
        start = end
        while start > 1 and rev[start - 1] in _DIGITS:
            start -= 1
        if rev[start - 1] != "~" or start - 1 == 0:
            break
        steps += _generations(rev, rev[start:end])
        end = start - 1
        if steps > MAX_GENERATIONS:
            raise RefNotFoundError(f"{rev}: more than {MAX_GENERATIONS} generations back", rev=rev)
    return rev[:end], steps


def _generations(rev: str, digits: str) -> int:
    if not digits:
        return 1
    if len(digits.lstrip("0")) > len(str(MAX_GENERATIONS)):
        raise RefNotFoundError(f"{rev}: more than {MAX_GENERATIONS} generations back", rev=rev)
    return int(digits)


def _resolve_base(repo: Repository, base: str, rev: str) -> ObjectId:
    if not base:
        raise RefNotFoundError(
            "empty revision: give a ref, a commit id or a prefix of one", rev=rev
        )
    with repo.index.reader() as reader:
        if is_full_hex(base):
            commit_id = ObjectId(bytes.fromhex(base.lower()))
            record = reader.object(commit_id)
            if record is not None and record.kind is ObjectType.COMMIT:
                return commit_id
            ref = reader.ref(base)
            if ref is not None:
                return ref
            what = "no commit" if record is None else f"a {record.kind.suffix}, not a commit:"
            raise RefNotFoundError(f"{what} {base} in this repository", rev=rev)
        ref = reader.ref(base) if _may_be_ref(base) else None
        if ref is not None:
            return ref
        if is_hex_prefix(base.lower()):
            matches = reader.commits_with_prefix(base.lower())
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise AmbiguousRevError(
                    f"{base}: id prefix matches several commits; type more digits", prefix=base
                )
    raise RefNotFoundError(f"{rev}: no such ref or commit", rev=rev)


def _may_be_ref(name: str) -> bool:
    """Only a valid ref name is looked up: the index keys need not take anything else
    (an empty or over-long key, or text that is not UTF-8)."""
    try:
        check_ref_name(name)
    except InvalidRefNameError:
        return False
    return True


def history(repo: Repository, commit_id: ObjectId) -> Iterator[tuple[ObjectId, Commit]]:
    """The commit and its ancestors, newest first; stops at a missing parent."""
    current: ObjectId | None = commit_id
    seen = {commit_id}
    while current is not None:
        if not repo.has_object(current):
            return  # history truncated (pulled with a depth, or pruned)
        commit = repo.read_commit(current)
        yield current, commit
        current = commit.parent
        if current is not None:
            _no_loop(seen, current)
