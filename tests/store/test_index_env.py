"""Opening an index (store/index_env.py): what is refused, and how it is named; the
page budget that holds its mapped pages."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from store import FileHeader, PageBudget, Repository, index_env
from store.errors import IndexDamagedError, UsageError

REG = stat.S_IFREG | 0o644


def test_an_index_open_under_another_path_is_not_called_damaged(
    user_repo: Repository, tmp_path: Path
) -> None:
    """py-lmdb refuses a second environment on one file in a process (a bind mount of
    the same repository, a copy made with hard links, whose index is the original's):
    that is how the repository was reached, not a damaged index, which the CLI would
    report as one (exit code 3: 'rebuild-index may help')."""
    with user_repo.transaction() as txn:
        txn.write_file(FileHeader(0, 0, REG), b"one file")
    copy = tmp_path / "copy"
    shutil.copytree(user_repo.path, copy, copy_function=os.link)
    with pytest.raises(UsageError, match="already open in this process") as raised:
        Repository.open(copy)
    assert not isinstance(raised.value, IndexDamagedError)
    assert "damaged" not in str(raised.value)


def test_a_page_budget_of_its_own_counts_held_bytes_and_measures_after_each_release() -> None:
    """The mount daemon's bound (mountd/mapped.py) is a PageBudget with its own budget
    and bytes held besides the map: one rule for both (note8). Here the process maps
    100 bytes of libraries, and a release lets the index's go but not a library's
    mapped since."""
    mapped, held, released = [100], [0], []

    def drop() -> None:
        released.append(mapped[0])
        mapped[0] = after_release[0]

    after_release = [100]
    pages = PageBudget(drop, 50, held=lambda: held[0], resident=lambda: mapped[0])
    pages.measure()
    assert pages.limit == 150 and not released
    mapped[0] = 140  # index pages under the budget
    pages.look()
    assert not released
    held[0] = 20  # with what is held, past it
    pages.look()
    assert released == [140] and pages.limit == 150
    after_release[0] = 130  # a library mapped since: not the index's
    mapped[0] = 190
    pages.look()
    assert released == [140, 190] and pages.limit == 180
    for _ in range(10):  # under the new limit: no release at every look
        pages.look()
    assert len(released) == 2
    held[0], mapped[0] = 0, 110  # less mapped: the baseline comes down with it
    pages.look()
    assert pages.limit == 160 and len(released) == 2


def test_the_index_budget_defaults_to_mapped_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a budget of its own, a PageBudget follows index_env.MAPPED_BUDGET (the
    tests of tests/store set it to 0 to release at every look)."""
    pages = PageBudget(lambda: None, resident=lambda: 1000)
    assert pages.limit is None and pages.budget == index_env.MAPPED_BUDGET
    monkeypatch.setattr(index_env, "MAPPED_BUDGET", 7)
    pages.measure()
    assert pages.limit == 1007
