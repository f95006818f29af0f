"""prune's index transactions (store/prune.py, _Garbage.file_paths): the garbage file
objects leave the index in batches of whole objects/XX directories, the metadata with
the first, and a stat cache of up to as many rows swept in the last of them: a prune
of a few hundred files syncs the index once, not once for every directory holding
garbage (up to 256: most of a small prune's fixed cost) and once more for the sweep."""

from __future__ import annotations

import importlib
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from store import Repository, fsck, prune
from store.ids import ObjectType
from store.index import Index, WriteBatch
from tests.helpers import cli, commit_dir

FILES = 400  # garbage in most of the 256 directories


def _garbage(repo: Repository, tmp_path: Path, cached: bool = False) -> set[bytes]:
    """A commit of FILES small files on a ref then deleted: everything is garbage.
    The ids of its objects."""
    source = tmp_path / "src"
    for n in range(FILES):
        sub = source / f"d{n % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{n}").write_text(f"file {n}\n")
    if cached:  # the stat cache takes files whose ctime is past the second of the scan
        time.sleep(1.1)
    commit_dir(repo, source, "doomed")
    with repo.index.reader() as reader:
        ids = {bytes(object_id) for object_id, _ in reader.iter_kinds()}
    assert cli("--repo", repo.path, "refs", "--delete", "doomed").code == 0
    return ids


@pytest.fixture
def applied(monkeypatch: pytest.MonkeyPatch) -> list[WriteBatch]:
    """Every WriteBatch applied to an index (each one LMDB transaction, one sync)."""
    seen: list[WriteBatch] = []
    real = Index.apply

    def counting(
        index: Index, batch: WriteBatch, before_commit: Callable[[], None] | None = None
    ) -> None:
        seen.append(batch)
        real(index, batch, before_commit)

    monkeypatch.setattr(Index, "apply", counting)
    return seen


def test_a_small_prune_writes_the_index_once(
    user_repo: Repository, tmp_path: Path, applied: list[WriteBatch]
) -> None:
    """400 garbage files in ~200 directories, the stat cache vouching for each: one
    transaction removes them, the metadata and the stale rows (there were 200 and
    more transactions, then one more for the stat cache's sweep)."""
    doomed = _garbage(user_repo, tmp_path, cached=True)
    with user_repo.index.reader() as reader:
        rows = sum(1 for _ in reader.iter_statcache())
    assert rows >= FILES
    applied.clear()
    report = prune(user_repo, refs_only=True)
    assert report.objects == len(doomed)
    assert len(applied) == 1, [len(b.remove_objects) for b in applied]
    assert {bytes(o) for o in applied[0].remove_objects} == doomed
    assert len(applied[0].statcache_remove) == rows
    with user_repo.index.reader() as reader:
        assert list(reader.iter_statcache()) == []
    assert not (user_repo.path / "tmp" / "prune-sweep-pending").exists()
    assert fsck(user_repo, all_objects=True).clean
    assert not list((user_repo.path / "objects").glob("*/*.file"))


def test_batches_are_whole_directories_and_the_metadata_goes_first(
    repo: Repository,
    tmp_path: Path,
    applied: list[WriteBatch],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With batches of at least 50 objects: several transactions, each of whole
    directories (no directory's garbage split over two), in id order, the commit and
    its trees in the first; every object and file gone, fsck clean."""
    monkeypatch.setattr(importlib.import_module("store.prune"), "_ROWS_AT_ONCE", 50)
    doomed = _garbage(repo, tmp_path)
    with repo.index.reader() as reader:
        metadata = {bytes(o) for o, kind in reader.iter_kinds() if kind is not ObjectType.FILE}
    applied.clear()
    prune(repo, refs_only=True)
    removals = [{bytes(o) for o in b.remove_objects} for b in applied if b.remove_objects]
    assert len(removals) >= FILES // 50 - 1
    assert metadata <= removals[0]
    assert not any(metadata & later for later in removals[1:])
    files = [sorted(batch - metadata) for batch in removals]
    assert all(len(batch) >= 50 for batch in files[:-1])
    directories = [{object_id[0] for object_id in batch} for batch in files]
    for before, after in itertools.pairwise(directories):
        assert max(before) < min(after)
    assert set().union(*removals) == doomed
    assert fsck(repo, all_objects=True).clean
    assert not [p for p in (repo.path / "objects").rglob("*") if p.is_file()]


def test_a_dry_run_writes_nothing(
    user_repo: Repository, tmp_path: Path, applied: list[WriteBatch]
) -> None:
    doomed = _garbage(user_repo, tmp_path)
    applied.clear()
    assert prune(user_repo, refs_only=True, dry_run=True).objects == len(doomed)
    assert applied == []
    with user_repo.index.reader() as reader:
        assert sum(1 for _ in reader.iter_kinds()) == len(doomed)
