"""Revisions: what a user types to name a commit, and walking history.

A REV is a ref name, a full id, a unique id prefix of at least 4 hex digits,
optionally followed by ``@{DATE}`` (the commit it named at that time), then by ``^``
(parent, repeatable) or ``~N`` (N-th ancestor): ``main@{3 days ago}~2``. A ref of the
same name wins over an id prefix, and a full id wins over a ref.

``REF@{DATE}`` is the first commit, walking REF's history from its head (parent by
parent), whose timestamp is at or before DATE (store/revdates.py reads DATE). A
commit's timestamp is what its author wrote, not when the ref took it, so in a
history whose times go back and forth this is not "what REF held then": sapwood
keeps no reflog. ``ID@{DATE}`` (a full id or a prefix) has no history of a ref to
search: it is the commit itself if it is as old as DATE, else an error. ``@{...}``
binds to the base only: ``main~2@{yesterday}`` is refused.
"""

from __future__ import annotations

from collections.abc import Iterator

from store.errors import (
    AmbiguousRevError,
    CorruptObjectError,
    InvalidDateError,
    InvalidRefNameError,
    NoCommitAtDateError,
    RefNotFoundError,
)
from store.ids import ObjectId, ObjectType, is_full_hex, is_hex_prefix
from store.names import check_ref_name
from store.objects import Commit
from store.repo import Repository
from store.revdates import format_time, parse_date

MAX_GENERATIONS = 2**31 - 1  # far beyond any real history; bounds what ~N may ask
_DIGITS = "0123456789"


def rev_parse(repo: Repository, rev: str, *, now: int | None = None) -> ObjectId:
    """The commit id that ``rev`` names; raises RefNotFoundError or AmbiguousRevError.

    A ``@{DATE}`` that is not a date raises InvalidDateError, one that no commit is as
    old as NoCommitAtDateError (both RefNotFoundError). ``now`` (seconds since the
    epoch; default the clock) is what ``@{3 days ago}`` counts back from.
    """
    base, steps = _split_suffixes(rev)
    base, date = _split_date(base, rev)
    commit_id, from_ref = _resolve_base(repo, base, rev)
    if date is not None:
        try:
            when = parse_date(date, now)
        except InvalidDateError as exc:
            raise InvalidDateError(f"{rev}: {exc}", rev=rev, date=date) from None
        if from_ref:
            commit_id = commit_as_of(repo, commit_id, when, rev=rev)
        else:
            _require_old_enough(repo, commit_id, when, rev)
    seen = {commit_id}
    for _ in range(steps):
        parent = repo.read_commit(commit_id).parent
        if parent is None:
            raise RefNotFoundError(f"{rev}: commit {commit_id.hex()[:12]} has no parent", rev=rev)
        if not repo.has_object(parent):  # else log REV~N showed nothing and exited 0
            raise RefNotFoundError(
                f"{rev}: commit {commit_id.hex()[:12]}'s parent {parent.hex()[:12]} is not in "
                "this repository (pulled with a depth, or pruned)",
                rev=rev,
            )
        _no_loop(seen, parent)
        commit_id = parent
    return commit_id


def commit_as_of(repo: Repository, head: ObjectId, when: int, *, rev: str = "") -> ObjectId:
    """The first commit, walking the history of ``head`` parent by parent, whose
    timestamp is at or before ``when`` (seconds since the epoch).

    Raises NoCommitAtDateError naming the oldest commit seen when none is (``rev``
    names the revision in its message), CorruptObjectError if the history loops.
    """
    earliest: tuple[int, ObjectId] | None = None
    for commit_id, commit in history(repo, head):
        if commit.timestamp <= when:
            return commit_id
        if earliest is None or commit.timestamp < earliest[0]:
            earliest = (commit.timestamp, commit_id)
    what = rev or head.hex()
    if earliest is None:
        raise NoCommitAtDateError(
            f"{what}: no commit at or before {format_time(when)}: commit {head.hex()[:12]} "
            "is not in this repository",
            rev=rev,
            time=when,
        )
    raise NoCommitAtDateError(
        f"{what}: no commit at or before {format_time(when)}; the earliest in its history "
        f"is {earliest[1].hex()[:12]} of {format_time(earliest[0])}",
        rev=rev,
        time=when,
        earliest=earliest[1],
        earliest_time=earliest[0],
    )


def _require_old_enough(repo: Repository, commit_id: ObjectId, when: int, rev: str) -> None:
    """``ID@{DATE}``: a commit id has no ref history to search, only itself."""
    timestamp = repo.read_commit(commit_id).timestamp
    if timestamp > when:
        raise NoCommitAtDateError(
            f"{rev}: commit {commit_id.hex()[:12]} is of {format_time(timestamp)}, after "
            f"{format_time(when)} (a commit id has no ref history to search back in)",
            rev=rev,
            time=when,
            earliest=commit_id,
            earliest_time=timestamp,
        )


def _split_date(base: str, rev: str) -> tuple[str, str | None]:
    """(the ref or id, the DATE of its ``@{DATE}`` or None). Ref names and ids hold no
    '@' or '{', so the first '@{' starts the date."""
    start = base.find("@{")
    if start < 0:
        return base, None
    if not base.endswith("}"):
        raise InvalidDateError(
            f"{rev}: '@{{' is not closed by '}}', or is followed by more than ^ and ~N",
            rev=rev,
            date=base[start + 2 :],
        )
    head = base[:start]
    if head.endswith("^") or head.rstrip(_DIGITS).endswith("~"):
        raise RefNotFoundError(
            f"{rev}: @{{DATE}} goes right after the ref or commit id (as main@{{DATE}}~2)",
            rev=rev,
        )
    return head, base[start + 2 : -1]


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


def _resolve_base(repo: Repository, base: str, rev: str) -> tuple[ObjectId, bool]:
    """The commit ``base`` names, and whether through a ref."""
    if not base:
        raise RefNotFoundError(
            "empty revision: give a ref, a commit id or a prefix of one", rev=rev
        )
    with repo.index.reader() as reader:
        if is_full_hex(base):
            commit_id = ObjectId(bytes.fromhex(base.lower()))
            record = reader.object(commit_id)
            if record is not None and record.kind is ObjectType.COMMIT:
                return commit_id, False
            ref = reader.ref(base)
            if ref is not None:
                return ref, True
            what = "no commit" if record is None else f"a {record.kind.suffix}, not a commit:"
            raise RefNotFoundError(f"{what} {base} in this repository", rev=rev)
        ref = reader.ref(base) if _may_be_ref(base) else None
        if ref is not None:
            return ref, True
        if is_hex_prefix(base.lower()):
            matches = reader.commits_with_prefix(base.lower())
            if len(matches) == 1:
                return matches[0], False
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
