"""Refs (compare-and-swap updates, names) and revisions (ids, prefixes, ^ and ~N)."""

from __future__ import annotations

import pytest

from store import (
    AmbiguousRevError,
    InvalidRefNameError,
    ObjectId,
    RefConflictError,
    RefNotFoundError,
    Repository,
    check_ref_name,
    history,
    rev_parse,
)
from tests.helpers import empty_commit


def _commit(repo: Repository, branch: str, n: int, parent: ObjectId | None) -> ObjectId:
    return empty_commit(repo, branch, 1_700_000_000 + n, f"commit {n}", parent)


def _chain(repo: Repository, length: int) -> list[ObjectId]:
    ids: list[ObjectId] = []
    for n in range(length):
        ids.append(_commit(repo, "main", n, ids[-1] if ids else None))
    return ids


def test_rev_parse_forms(user_repo: Repository) -> None:
    ids = _chain(user_repo, 4)
    assert rev_parse(user_repo, "main") == ids[3]
    assert rev_parse(user_repo, ids[1].hex()) == ids[1]
    assert rev_parse(user_repo, ids[2].hex()[:10]) == ids[2]
    assert rev_parse(user_repo, "main^") == ids[2]
    assert rev_parse(user_repo, "main^^") == ids[1]
    assert rev_parse(user_repo, "main~3") == ids[0]
    assert rev_parse(user_repo, "main~1^") == ids[1]
    with pytest.raises(RefNotFoundError):
        rev_parse(user_repo, "main~4")
    with pytest.raises(RefNotFoundError):
        rev_parse(user_repo, "nosuchref")
    with pytest.raises(RefNotFoundError):
        rev_parse(user_repo, "0" * 64)
    assert rev_parse(user_repo, "main~0") == ids[3]
    assert rev_parse(user_repo, "main~") == ids[2]  # as git: ~ alone is ~1
    assert rev_parse(user_repo, "main~01~1") == ids[1]
    for rev in ("", "^", "~1", "main~99999999999999999999", "main~-1", "main~\u0661"):
        with pytest.raises(RefNotFoundError):
            rev_parse(user_repo, rev)


def test_history_is_newest_first(user_repo: Repository) -> None:
    ids = _chain(user_repo, 3)
    assert [cid for cid, _ in history(user_repo, ids[-1])] == ids[::-1]


def test_prefixes_need_four_digits(user_repo: Repository) -> None:
    commit_id = _commit(user_repo, "main", 0, None)
    assert rev_parse(user_repo, commit_id.hex()[:4]) == commit_id
    with pytest.raises(RefNotFoundError):
        rev_parse(user_repo, commit_id.hex()[:3])


def test_ambiguous_prefix_with_forged_ids(user_repo: Repository) -> None:
    from store.index import WriteBatch

    a, b = (
        ObjectId(bytes.fromhex("abcd01") + b"\0" * 29),
        ObjectId(bytes.fromhex("abcd02") + b"\0" * 29),
    )
    user_repo.index.apply(WriteBatch(commits={a: 1, b: 2}))
    with pytest.raises(AmbiguousRevError):
        rev_parse(user_repo, "abcd")
    with pytest.raises(AmbiguousRevError):
        rev_parse(user_repo, "abcd0")


def test_compare_and_swap_refuses_a_moved_ref(user_repo: Repository) -> None:
    first = _commit(user_repo, "main", 0, None)
    second = _commit(user_repo, "other", 1, None)
    with pytest.raises(RefConflictError), user_repo.transaction() as txn:
        txn.set_ref("main", second, expected=second)
    assert user_repo.refs()["main"] == first
    with pytest.raises(RefConflictError), user_repo.transaction() as txn:
        txn.set_ref("main", second, expected=None)
    with user_repo.transaction() as txn:
        txn.set_ref("main", second, expected=first)
    assert user_repo.refs()["main"] == second


@pytest.mark.parametrize(
    "name",
    [
        "a..b",
        "with space",
        "tab\there",
        "ctl\x01",
        "",
        "/lead",
        "trail/",
        "a//b",
        "-x",
        "x.lock",
        "a:b:c",
        "main\n",  # a regular expression's '$' matches before a final newline
        "a/b.",
        "\udcff",  # an undecodable byte of a command line
        "\ud800",  # a lone surrogate, which no bytes decode to
        "r" * 256,
    ],
)
def test_bad_ref_names(name: str) -> None:
    with pytest.raises(InvalidRefNameError):
        check_ref_name(name)


@pytest.mark.parametrize(
    "name", ["main", "os/x86_64/stable", "remote:os/stable", "v1.0", "a_b-c+d"]
)
def test_good_ref_names(name: str) -> None:
    assert check_ref_name(name) == name
