"""Least-recently-used maps bounded by total weight (entries of a tree, bytes, open files)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

_K = TypeVar("_K")
_V = TypeVar("_V")


class WeightedLru(Generic[_K, _V]):
    """Values computed on a miss and kept while their total weight fits the budget.

    The most recent value always stays, however heavy: the caller is using it.
    """

    def __init__(self, compute: Callable[[_K], _V], weigh: Callable[[_V], int], budget: int):
        self._compute = compute
        self._weigh = weigh
        self.budget = budget
        self.weight = 0
        self._items: OrderedDict[_K, tuple[_V, int]] = OrderedDict()

    def get(self, key: _K) -> _V:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
            return found[0]
        value = self._compute(key)
        weight = max(1, self._weigh(value))
        self._items[key] = (value, weight)
        self.weight += weight
        while self.weight > self.budget and len(self._items) > 1:
            _, (_, dropped) = self._items.popitem(last=False)
            self.weight -= dropped
        return value


class LruPool(Generic[_K, _V]):
    """Values kept by key within a count and a total weight, least recently used out first.

    Unlike WeightedLru the caller makes the value (and may make room before it does:
    a value that costs disk space to make), and an evicted value is handed to ``drop``
    (an open file to close). The newest value always stays, however heavy.
    """

    def __init__(self, count: int, budget: int, drop: Callable[[_V], object]) -> None:
        self.count = count
        self.budget = budget
        self.weight = 0
        self._drop = drop
        self._items: OrderedDict[_K, tuple[_V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: _K) -> _V | None:
        found = self._items.get(key)
        if found is None:
            return None
        self._items.move_to_end(key)
        return found[0]

    def make_room(self, weight: int) -> None:
        """Evict until one more value of ``weight`` fits (or nothing is left)."""
        while self._items and (
            len(self._items) + 1 > self.count or self.weight + weight > self.budget
        ):
            _, (value, dropped) = self._items.popitem(last=False)
            self.weight -= dropped
            self._drop(value)

    def add(self, key: _K, value: _V, weight: int) -> None:
        if key in self._items:  # replaced: the old value is dropped like an evicted one
            old, old_weight = self._items.pop(key)
            self.weight -= old_weight
            self._drop(old)
        self.make_room(weight)
        self._items[key] = (value, weight)
        self.weight += weight

    def clear(self) -> None:
        while self._items:
            _, (value, _) = self._items.popitem()
            self._drop(value)
        self.weight = 0


class RecentKeys(Generic[_K]):
    """The last ``limit`` distinct keys seen: says whether a key is new.

    What the mount logs once per damaged object: a kernel that retries a failing read,
    or a listing asked for a hundred times, adds no line after the first.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: OrderedDict[_K, None] = OrderedDict()

    def first_time(self, key: _K) -> bool:
        if self.seen(key):
            return False
        self.add(key)
        return True

    def seen(self, key: _K) -> bool:
        """Whether ``key`` is among the last keys added (it becomes the most recent)."""
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        return False

    def add(self, key: _K) -> None:
        self._seen[key] = None
        if len(self._seen) > self.limit:
            self._seen.popitem(last=False)
