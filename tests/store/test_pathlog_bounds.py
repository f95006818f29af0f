"""log -- PATH's tree cache is bounded in bytes (attack-history.md #11): a history that
changes a directory of 100,000 entries in every commit kept 256 encodings of 6 MB."""

from __future__ import annotations

import pytest

import store.pathlog
from store import ObjectId, Repository


def test_the_tree_cache_holds_a_bounded_number_of_bytes(
    user_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = b"T\x01" + b"\0" * 8  # no files, no directories
    big = empty + b"\0" * (1 << 20)  # what follows the two counts is never read

    monkeypatch.setattr(store.pathlog, "dirtree_payload", lambda repo, tree_id: big)
    cache = store.pathlog._TreeCache(user_repo)
    held = 0
    for n in range(200):
        assert cache.find(ObjectId(n.to_bytes(32, "big")), b"name") is None
        held = max(held, sum(map(len, cache._payloads.values())))
    assert held <= 33 << 20, f"{held >> 20} MiB of dirtrees held"
