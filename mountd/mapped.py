"""The index pages a mount daemon keeps mapped: bounded, so that its memory is.

A walk touches much of the LMDB index (a million files: 300 MB of it), and every page
it maps counts in the daemon's resident memory although it is page cache: a record
read at random maps about 40 KiB (the kernel maps the folio around a fault), a tree of
200 entries about 100 KiB. Past a budget, the daemon lets go of them
(Repository.release_index_pages: madvise DONTNEED on the read-only map drops the page
table entries and nothing else; the pages stay in the page cache, and the next read of
them maps them again, a minor fault). It needs no transaction closed, unlike closing
and reopening the map, which also churned malloc (3 MiB more anonymous memory after a
few hundred reopens).

The view calls this every few dozen records it reads (mountd/records.py: on the request
path, because a walk keeps the daemon's loop too busy for a timer to run in time). A
drop costs about a millisecond, and the pages mapped again afterwards a few
microseconds a record: walking a million files costs the daemon about 8 s of CPU more
than keeping the whole index mapped would, and its memory stays under 100 MiB.

The budget is shared with archive mode's decompressed small objects (mountd/sources.py),
which are anonymous memory the daemon would otherwise add on top (32 MiB of them, when
a walk also reads): they may take half of it at most (and 32 MiB at most, however
large the budget: they are not page cache), and the index pages are let go of once
they and the objects held together pass it. One budget, one number to set
(SAPWOOD_MOUNT_INDEX_MIB), and a daemon that walks and reads an archive repository
stays where a walk alone keeps it. In the other modes the objects are open files and
nothing is held: the index has the whole budget, as before.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from mountd.view import TreeView
from store import PageBudget, Repository

# Index pages kept mapped (and archive objects held), beyond the file-backed memory the
# daemon holds once mounted (its libraries); SAPWOOD_MOUNT_INDEX_MIB sets another
# budget, in MiB. 32, not 40: the million-file run of scale_bench (treegen's tree, a
# directory of 100,000 entries) left the daemon at 99.8-101.5 MiB after a full walk with
# 40, at issue 15's limit of 100; session 6's 5,000 x 200 tree had shown 64-82.
INDEX_MAP_BUDGET = 32 << 20
INDEX_BUDGET_ENV = "SAPWOOD_MOUNT_INDEX_MIB"


def memory_budget() -> int:
    """The budget in bytes: SAPWOOD_MOUNT_INDEX_MIB's, or INDEX_MAP_BUDGET."""
    chosen = os.environ.get(INDEX_BUDGET_ENV, "")
    # ASCII digits only: isdigit() alone takes "²", which int() refuses
    return int(chosen) << 20 if chosen.isascii() and chosen.isdigit() else INDEX_MAP_BUDGET


def bound_view_memory(view: TreeView, budget: int | None = None) -> MappedIndexBound:
    """Hold what a view adds to the daemon's memory to one budget (by default
    ``memory_budget()``): half of it at most (32 MiB at most) for decompressed archive
    objects, the rest, and whatever they leave, for index pages. Made once mounted
    (the libraries mapped by then are the baseline)."""
    budget = memory_budget() if budget is None else budget
    view.sources.hold_at_most(budget // 2)
    bound = MappedIndexBound(view.repo, budget, held=view.sources.held_bytes)
    view.repo.take_over_index_page_releases()  # this budget alone (a raised one kept)
    view.index_hook = bound
    return bound


def _nothing_held() -> int:
    return 0


class MappedIndexBound:
    """Called now and then (with nothing to say): lets go of the repository's mapped
    index pages once the process's file-backed resident memory, and the bytes ``held``
    says are held elsewhere, have grown ``budget`` bytes past what they were when this
    was made (nothing was held then).

    The rule is store's PageBudget's, with this budget and the held bytes: what is
    still mapped right after a release is not the index's (a library loaded since, a
    file a caller maps), so the baseline is measured anew after each one (kept from
    the start, it came off the budget for good and, past it, released at every call:
    review10 7), and lowered whenever less is mapped. Only the counting differs: the
    view calls this every few dozen records (mountd/records.py), and each call looks."""

    def __init__(
        self,
        repo: Repository,
        budget: int | None = None,
        held: Callable[[], int] = _nothing_held,
    ) -> None:
        self.repo = repo
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)  # read anew
        self.drops = 0
        self.pages = PageBudget(
            self._release,
            memory_budget() if budget is None else budget,
            held=held,
            resident=self.mapped_bytes,
        )
        self.pages.measure()  # the libraries mapped by now: none of the index yet

    def __call__(self) -> None:
        """Release past the limit (the baseline measured anew after it)."""
        self.pages.look()

    @property
    def budget(self) -> int:
        """Index pages mapped (and archive bytes held) past the baseline before a release."""
        return self.pages.budget

    @property
    def limit(self) -> int:
        """Mapped and held bytes past which a call releases."""
        limit = self.pages.limit
        assert limit is not None  # measured when made
        return limit

    def mapped_bytes(self) -> int:
        """The process's resident file-backed memory (libraries and the index map)."""
        return int(os.pread(self._statm, 128, 0).split()[2]) * self._page

    def _release(self) -> None:
        self.repo.release_index_pages()
        self.drops += 1
