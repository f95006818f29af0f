"""Progress of long operations (fsck, prune, checkout, deploy) for callers that show it.

Library code never prints: an operation given a :data:`TaskCallback` calls it with a
:class:`TaskProgress` now and then, and the caller draws what it likes (the command
line draws a bar on a terminal). A :class:`Ticker` keeps the cost off hot loops: the
operation adds to it once per batch of items, and the callback runs at most every
0.1 s, plus once at the end of each phase with the final count.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from store.errors import SapwoodError
from store.ids import ObjectId, ObjectType
from store.objects import dirtree_outline

if TYPE_CHECKING:
    from store.repo import Repository

_EVERY = 0.1  # seconds between two reports of one phase


@dataclass(frozen=True, slots=True)
class TaskProgress:
    """Where an operation is: its ``phase`` (a present participle, "checking",
    "deleting", "checking out"), ``done`` items of ``total`` (None when the total is
    not known), counted in ``unit`` ("object", "file")."""

    phase: str
    done: int
    total: int | None = None
    unit: str = "object"


TaskCallback = Callable[[TaskProgress], None]


class Ticker:
    """Counts one phase's items and reports them to ``callback`` (if any) at most every
    0.1 s; :meth:`finish` reports the last count. Add per batch, not per item."""

    __slots__ = ("_callback", "_due", "done", "phase", "total", "unit")

    def __init__(
        self, callback: TaskCallback | None, phase: str, total: int | None, unit: str = "object"
    ) -> None:
        self._callback = callback
        self.phase = phase
        self.total = total
        self.unit = unit
        self.done = 0
        self._due = 0.0
        if callback is not None:
            self._report()

    def add(self, count: int) -> None:
        """``count`` more items are done."""
        self.done += count
        if self._callback is not None and time.monotonic() >= self._due:
            self._report()

    def finish(self) -> None:
        """Report the final count (the total, when the phase did all it announced)."""
        if self._callback is not None:
            self._report()

    def _report(self) -> None:
        assert self._callback is not None
        self._due = time.monotonic() + _EVERY
        self._callback(TaskProgress(self.phase, self.done, self.total, self.unit))


def tick(callback: TaskCallback | None, phase: str, total: int | None = None) -> None:
    """Announce a phase whose items are not counted (a walk of the trees, say)."""
    if callback is not None:
        callback(TaskProgress(phase, 0, total))


def counted(
    callback: TaskCallback | None, phase: str, items: list[ObjectId], unit: str
) -> Iterator[ObjectId]:
    """``items``, each counted done once the caller asks for the next (a walk of the
    trees, counted in the commits it starts from)."""
    ticker = Ticker(callback, phase, len(items), unit)
    for item in items:
        yield item
        ticker.add(1)
    ticker.finish()


def count_files(repo: Repository, tree: ObjectId) -> int | None:
    """The entries a checkout of ``tree`` writes that are not directories (files and
    symlinks; a subtree found twice counts twice), read from the dirtrees' outlines;
    None if one cannot be read (the checkout itself will say why)."""
    from store.mtree import MAX_TREE_DEPTH  # here: mtree imports the transaction machinery

    total = 0
    stack = [(tree, 0)]
    try:
        with repo.index.reader() as reader:
            while stack:
                tree_id, depth = stack.pop()
                record = reader.object(tree_id)
                if (
                    record is None
                    or record.kind is not ObjectType.DIRTREE
                    or depth > MAX_TREE_DEPTH
                ):
                    return None
                files, subtrees = dirtree_outline(record.payload)
                total += files
                stack += [(subtree, depth + 1) for subtree in subtrees]
    except SapwoodError:
        return None
    return total
