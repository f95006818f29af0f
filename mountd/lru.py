"""The mount's one least-recently-used map, bounded by a count and a total weight.

Every cache of the mount is one of these: decoded trees and headers (weighed in
entries), directory instances, open object files and spools (closed when evicted),
small verified files (weighed in bytes), and the sets of keys already seen (objects
verified, damage logged once).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

_K = TypeVar("_K")
_V = TypeVar("_V")


def _keep(_: object) -> None:
    """An evicted value that needs no clean-up."""


def _one(_: object) -> int:
    return 1


class Lru(Generic[_K, _V]):
    """Values kept by key within ``count`` entries and a total ``budget`` of weight,
    least recently used out first; an evicted value is handed to ``drop`` (an open
    file to close). The newest value always stays, however heavy: the caller is
    using it.
    """

    def __init__(
        self, count: int, budget: int | None = None, drop: Callable[[_V], object] = _keep
    ) -> None:
        self.count = count
        self.budget = count if budget is None else budget
        self.weight = 0
        self._drop = drop
        self._items: OrderedDict[_K, tuple[_V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is kept; a look only (not a use: its place stays). One dict
        lookup: safe from another thread while this one changes the map."""
        return key in self._items

    def get(self, key: _K) -> _V | None:
        """The value of ``key`` (now the most recent), or None."""
        found = self._items.get(key)
        if found is None:
            return None
        self._items.move_to_end(key)
        return found[0]

    def get_or_make(
        self, key: _K, make: Callable[[_K], _V], weigh: Callable[[_V], int] = _one
    ) -> _V:
        """The value of ``key``, made and kept on a miss."""
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
            return found[0]
        value = make(key)
        self.add(key, value, max(1, weigh(value)))
        return value

    def discard(self, key: _K) -> None:
        """Drop ``key`` now, if kept (its value handed to ``drop``)."""
        found = self._items.pop(key, None)
        if found is not None:
            self.weight -= found[1]
            self._drop(found[0])

    def make_room(self, weight: int) -> None:
        """Evict until one more value of ``weight`` fits (or nothing is left): for a
        value that costs disk space to make, before it is made."""
        while self._items and (
            len(self._items) + 1 > self.count or self.weight + weight > self.budget
        ):
            _, (value, dropped) = self._items.popitem(last=False)
            self.weight -= dropped
            self._drop(value)

    def drop_oldest(self) -> bool:
        """Evict the least recently used value; False if nothing was kept."""
        if not self._items:
            return False
        _, (value, dropped) = self._items.popitem(last=False)
        self.weight -= dropped
        self._drop(value)
        return True

    def add(self, key: _K, value: _V, weight: int = 1) -> None:
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


class RecentKeys(Lru[_K, bool]):
    """The last ``count`` distinct keys seen: says whether a key is new.

    What the mount logs once per damaged object: a kernel that retries a failing read,
    or a listing asked for a hundred times, adds no line after the first.
    """

    def first_time(self, key: _K) -> bool:
        if self.seen(key):
            return False
        self.add(key, True)
        return True

    def seen(self, key: _K) -> bool:
        """Whether ``key`` is among the last keys added (it becomes the most recent)."""
        return self.get(key) is not None
