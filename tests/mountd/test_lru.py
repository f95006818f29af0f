"""The one weight-bounded LRU behind every cache of the mount."""

from __future__ import annotations

from mountd.lru import Lru, RecentKeys


def test_values_leave_oldest_first_when_the_weight_passes_the_budget() -> None:
    computed: list[int] = []

    def compute(key: int) -> list[int]:
        computed.append(key)
        return [key] * key  # weighs its key

    cache: Lru[int, list[int]] = Lru(count=100, budget=10)
    for key in (4, 3, 2):
        cache.get_or_make(key, compute, len)
    cache.get_or_make(4, compute, len)  # used again: now the newest
    cache.get_or_make(5, compute, len)  # 4 + 2 + 5 > 10: 3 goes, then 2
    assert cache.weight == 9
    cache.get_or_make(4, compute, len)
    cache.get_or_make(5, compute, len)
    assert computed == [4, 3, 2, 5]  # 4 and 5 stayed
    cache.get_or_make(3, compute, len)
    assert computed[-1] == 3 and cache.weight <= 10


def test_the_newest_value_stays_however_heavy() -> None:
    cache: Lru[int, bytes] = Lru(count=100, budget=10)
    assert cache.get_or_make(100, lambda key: b"x" * key, len) == b"x" * 100
    assert cache.weight == 100
    cache.get_or_make(1, lambda key: b"x" * key, len)
    assert cache.weight == 1


def test_a_pool_keeps_within_its_count_and_weight_and_drops_what_it_evicts() -> None:
    dropped: list[str] = []
    pool: Lru[str, str] = Lru(count=3, budget=10, drop=dropped.append)
    for key, weight in (("a", 4), ("b", 4), ("c", 1)):
        pool.add(key, key.upper(), weight)
    assert pool.get("a") == "A"  # now the newest
    pool.add("d", "D", 1)  # a fourth: the least recently used (b) goes
    assert dropped == ["B"] and pool.get("b") is None
    pool.make_room(10)  # room for the whole budget: everything goes
    assert dropped == ["B", "C", "A", "D"] and len(pool) == 0 and pool.weight == 0
    pool.add("big", "BIG", 100)  # heavier than the budget: the newest stays
    assert pool.get("big") == "BIG"
    pool.add("big", "BIG2", 1)  # replaced: the old value is dropped
    assert dropped[-1] == "BIG" and pool.weight == 1
    pool.clear()
    assert dropped[-1] == "BIG2" and len(pool) == 0


def test_recent_keys_say_once_per_key_within_their_limit() -> None:
    seen = RecentKeys[str](2)
    assert [seen.first_time(k) for k in ("a", "a", "b", "a")] == [True, False, True, False]
    assert seen.first_time("c")  # a and c now; b was the oldest
    assert seen.first_time("b") and not seen.first_time("c")
