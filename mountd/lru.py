"""A least-recently-used map bounded by total weight (entries of a tree, say)."""

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
