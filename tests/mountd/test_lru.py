"""The weight-bounded LRU behind the view's caches."""

from __future__ import annotations

from mountd.lru import WeightedLru


def test_values_leave_oldest_first_when_the_weight_passes_the_budget() -> None:
    computed: list[int] = []

    def compute(key: int) -> list[int]:
        computed.append(key)
        return [key] * key  # weighs its key

    cache = WeightedLru(compute, len, budget=10)
    for key in (4, 3, 2):
        cache.get(key)
    cache.get(4)  # used again: now the newest
    cache.get(5)  # 4 + 2 + 5 > 10: 3 goes, then 2
    assert cache.weight == 9
    cache.get(4)
    cache.get(5)
    assert computed == [4, 3, 2, 5]  # 4 and 5 stayed
    cache.get(3)
    assert computed[-1] == 3 and cache.weight <= 10


def test_the_newest_value_stays_however_heavy() -> None:
    cache = WeightedLru(lambda key: b"x" * key, len, budget=10)
    assert cache.get(100) == b"x" * 100
    assert cache.weight == 100
    cache.get(1)
    assert cache.weight == 1
