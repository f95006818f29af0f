"""The mount's bound on mapped index pages (mountd/mapped.py), without a kernel: the
view asks often enough, and the bound lets go only past its budget."""

from __future__ import annotations

import mmap
from pathlib import Path

import pytest

from mountd.mapped import INDEX_BUDGET_ENV, INDEX_MAP_BUDGET, MappedIndexBound
from mountd.records import INDEX_CHECK_RECORDS
from mountd.view import ROOT_INODE, CommitView
from store import Repository
from tests.helpers import many_directories_commit

MIB = 1 << 20


def test_the_view_asks_every_few_dozen_records_it_reads(user_repo: Repository) -> None:
    many_directories_commit(user_repo, 3, 300)
    view = CommitView(user_repo, user_repo.refs()["many"])
    asked_at: list[int] = []
    view.index_hook = lambda: asked_at.append(view.records_read)
    for _, attrs, _ in list(view.entries(ROOT_INODE, 0)):
        for name, _, _ in view.entries(attrs.ino, 0):
            view.lookup(attrs.ino, name)
    assert view.records_read >= 900  # every file's record, once
    # A read of a batch of files or of a tree comes between two asks, at most.
    gaps = [b - a for a, b in zip([0, *asked_at], asked_at, strict=False)]
    assert len(asked_at) >= view.records_read // (2 * INDEX_CHECK_RECORDS)
    assert max(gaps) <= 2 * INDEX_CHECK_RECORDS


class _Releases:
    """A repository stand-in that counts release_index_pages calls."""

    def __init__(self) -> None:
        self.released = 0

    def release_index_pages(self) -> None:
        self.released += 1


def test_pages_are_let_go_only_past_the_budget(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"x" * (16 * MIB))
    repo = _Releases()
    bound = MappedIndexBound(repo, budget=8 * MIB)  # type: ignore[arg-type]
    with open(data, "rb") as file, mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        for offset in range(0, 4 * MIB, 4096):  # 4 MiB mapped: under the budget
            mapped[offset]
        bound()
        assert repo.released == 0
        for offset in range(0, 16 * MIB, 4096):  # 16 MiB: past it
            mapped[offset]
        bound()
        assert repo.released == 1 and bound.drops == 1
        mapped.madvise(mmap.MADV_DONTNEED)  # what release_index_pages does to the index
    bound()
    assert repo.released == 1


def test_a_budget_that_is_not_ascii_digits_falls_back_to_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """'²' is a digit to str.isdigit but not to int(): the daemon must not die of it."""
    repo = _Releases()
    for chosen in ("²", "٣", "-5", "x"):
        monkeypatch.setenv(INDEX_BUDGET_ENV, chosen)
        bound = MappedIndexBound(repo)  # type: ignore[arg-type]
        assert bound.limit - bound.mapped_bytes() > INDEX_MAP_BUDGET // 2
    monkeypatch.setenv(INDEX_BUDGET_ENV, "500")
    bound = MappedIndexBound(repo)  # type: ignore[arg-type]
    assert bound.limit - bound.mapped_bytes() > 400 * MIB
