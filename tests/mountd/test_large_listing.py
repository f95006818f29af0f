"""A directory larger than the mount's tree cache is decoded once, not per lookup."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mountd import records as records_module
from mountd.view import ROOT_INODE, CommitView
from store import Commit, DirEntry, DirMeta, DirTree, FileHeader, ObjectId, Repository
from tests.helpers import record_calls


def _two_directories(repo: Repository, big: int) -> tuple[ObjectId, ObjectId]:
    """A commit of /big (``big`` files) and /small (one file); and /big's tree id."""
    with repo.transaction() as txn:
        file_id = txn.write_file(FileHeader(0, 0, stat.S_IFREG | 0o644), b"same\n")
        meta = txn.write_dirmeta(DirMeta(0, 0, stat.S_IFDIR | 0o755))
        big_id = txn.write_dirtree(
            DirTree.build({f"f{n:05d}".encode(): file_id for n in range(big)}, {})
        )
        small_id = txn.write_dirtree(DirTree.build({b"one": file_id}, {}))
        root = DirTree.build(
            {}, {b"big": DirEntry(big_id, meta), b"small": DirEntry(small_id, meta)}
        )
        commit_id = txn.write_commit(Commit(txn.write_dirtree(root), meta, None, 0))
    return commit_id, big_id


@pytest.mark.parametrize("budget", [1000, 100_000])
def test_lookups_in_a_large_directory_between_others_decode_it_once(
    user_repo: Repository, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    """The kernel's lookups of a walk alternate between a directory's entries and its
    ancestors (dentries it let go): with a 2,000-entry directory and a tree cache of
    1,000 entries, every small tree read evicted the large one, decoded again at the
    next lookup in it. Within the budget, the LRU keeps both as before."""
    monkeypatch.setattr(records_module, "TREE_CACHE_ENTRIES", budget)
    commit_id, big_id = _two_directories(user_repo, 2000)
    view = CommitView(user_repo, commit_id)
    reads = record_calls(monkeypatch, user_repo, "read_dirtree")
    big = view.lookup(ROOT_INODE, b"big")
    for n in range(0, 2000, 100):
        assert view.lookup(big.ino, f"f{n:05d}".encode()).size == 5
        small = view.lookup(ROOT_INODE, b"small")
        assert view.lookup(small.ino, b"one").size == 5
    assert reads.count(big_id) == 1
    assert len(reads) == 2  # big and small once each (the view read the root when made)


def test_only_the_last_large_listing_is_kept_aside(
    user_repo: Repository, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Two large directories read in turn: the one kept aside is the last one, so the
    memory beside the budget is one directory's, however many are large."""
    monkeypatch.setattr(records_module, "TREE_CACHE_ENTRIES", 1000)
    first, first_big = _two_directories(user_repo, 2000)
    second, second_big = _two_directories(user_repo, 3000)
    view = CommitView(user_repo, first)
    other = CommitView(user_repo, second)
    view.lookup(view.lookup(ROOT_INODE, b"big").ino, b"f00001")
    assert view._large is not None and view._large[0] == first_big
    other.lookup(other.lookup(ROOT_INODE, b"big").ino, b"f00001")
    assert other._large is not None and other._large[0] == second_big
    assert view._trees.weight <= 1000 and other._trees.weight <= 1000


def test_the_large_listing_goes_once_the_walk_has_moved_on(
    user_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kept aside while in use, not to the end of the walk: once other listings of as
    many entries as the budget were read since its last use, it is let go."""
    monkeypatch.setattr(records_module, "TREE_CACHE_ENTRIES", 1000)
    commit_id, big_id = _two_directories(user_repo, 2000)
    others = []
    with user_repo.transaction() as txn:
        file_id = txn.write_file(FileHeader(0, 0, stat.S_IFREG | 0o644), b"x")
        for n in range(10):  # trees of 200 entries
            files = {f"g{n}-{k:03d}".encode(): file_id for k in range(200)}
            others.append(txn.write_dirtree(DirTree.build(files, {})))
    view = CommitView(user_repo, commit_id)
    view.lookup(view.lookup(ROOT_INODE, b"big").ino, b"f00001")
    for tree_id in others[:4]:  # 800 entries: still in use
        view._tree(tree_id)
    assert view._large is not None and view._large[0] == big_id
    view._tree(big_id)  # used again: counted from here
    for tree_id in others[4:]:  # 1,200 entries read (the first four are cached, not read)
        view._tree(tree_id)
    assert view._large is None


def test_two_large_directories_that_fit_the_cache_are_not_decoded_at_every_lookup(
    user_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """attack12 1: listings of more than a quarter of the budget but within it (two
    directories of 20,000 entries, with the 65,536-entry cache) fitted the LRU together
    before they were kept aside; kept aside one at a time, lookups alternating between
    them (``diff -r`` of two commits' directories, ``cmp`` of their files: every read
    looks its file up in its directory's listing) decoded one of them every time. The
    one a newer large listing displaces goes into the LRU when it fits there."""
    monkeypatch.setattr(records_module, "TREE_CACHE_ENTRIES", 1000)
    _, first_big = _two_directories(user_repo, 400)
    _, second_big = _two_directories(user_repo, 500)
    with user_repo.transaction() as txn:  # one view over both: a root holding both trees
        meta = txn.write_dirmeta(DirMeta(0, 0, stat.S_IFDIR | 0o755))
        root = DirTree.build(
            {}, {b"a": DirEntry(first_big, meta), b"b": DirEntry(second_big, meta)}
        )
        both = txn.write_commit(Commit(txn.write_dirtree(root), meta, None, 0))
    view = CommitView(user_repo, both)
    assert view._large_above < 400  # both are large listings
    reads = record_calls(monkeypatch, user_repo, "read_dirtree")
    left = view.lookup(ROOT_INODE, b"a")
    right = view.lookup(ROOT_INODE, b"b")
    for n in range(0, 400, 20):
        assert view.lookup(left.ino, f"f{n:05d}".encode()).size == 5
        assert view.lookup(right.ino, f"f{n:05d}".encode()).size == 5
    assert reads.count(first_big) == 1 and reads.count(second_big) == 1
    assert view._trees.weight <= 1000
