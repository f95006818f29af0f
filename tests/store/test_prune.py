"""prune: OSTree's counts, the same on every mode (server archive or client bare-user)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from store import CommitIsHeadError, ObjectId, Repository, fsck, lookup, prune
from tests.helpers import cli, commit_dir


def _chain(repo: Repository, tmp_path: Path, length: int, branch: str = "main") -> list[ObjectId]:
    """``length`` commits on ``branch``, each adding one file, 1000 s apart."""
    source = tmp_path / f"src-{branch}"
    source.mkdir(exist_ok=True)
    ids = []
    for n in range(length):
        (source / f"file{n}").write_text(f"{branch} version {n}\n")
        ids.append(commit_dir(repo, source, branch, timestamp=1_000_000 + 1000 * n))
    return ids


def _commit_count(repo: Repository) -> int:
    with repo.index.reader() as reader:
        return sum(1 for _ in reader.commit_ids())


@pytest.mark.parametrize(("depth", "left"), [(0, 1), (1, 2), (2, 3), (-1, 5)])
def test_refs_only_depth_leaves_ostree_counts(
    repo: Repository, tmp_path: Path, depth: int, left: int
) -> None:
    ids = _chain(repo, tmp_path, 5)
    report = prune(repo, refs_only=True, depth=depth)
    assert _commit_count(repo) == left
    assert sorted(report.commits) == sorted(ids[: 5 - left])
    assert fsck(repo).clean
    kept_first = ids[5 - left]
    oldest = cli("--repo", repo.path, "cat", kept_first.hex(), f"/file{5 - left}")
    assert oldest.code == 0 and oldest.out == f"main version {5 - left}\n", oldest.err


def test_files_of_pruned_commits_leave_the_disk(repo: Repository, tmp_path: Path) -> None:
    ids = _chain(repo, tmp_path, 3)
    (tmp_path / "src-main" / "file0").unlink()
    last = commit_dir(repo, tmp_path / "src-main")
    old = lookup(repo, ids[0], "/file0").file
    assert old is not None and repo.content.path(old).exists()
    prune(repo, refs_only=True, depth=0)
    assert not repo.has_object(old) and not repo.content.path(old).exists()
    assert fsck(repo, all_objects=True).clean
    assert cli("--repo", repo.path, "log", "main").out.count("commit ") == 1
    assert lookup(repo, last, "/file2").file is not None


def test_without_refs_only_every_commit_is_a_root(repo: Repository, tmp_path: Path) -> None:
    _chain(repo, tmp_path, 2)
    assert cli("--repo", repo.path, "refs", "--delete", "main").code == 0
    assert prune(repo).objects == 0  # OSTree keeps unreferenced commits unless --refs-only
    assert _commit_count(repo) == 2
    assert prune(repo, refs_only=True).commits and _commit_count(repo) == 0


def test_delete_commit(repo: Repository, tmp_path: Path) -> None:
    ids = _chain(repo, tmp_path, 3)
    with pytest.raises(CommitIsHeadError, match="head of main") as refused:
        prune(repo, delete_commits=(ids[2],))
    assert (refused.value.commit_id, refused.value.refs) == (ids[2], ("main",))
    report = prune(repo, delete_commits=(ids[1],))
    assert report.commits == [ids[1]]
    assert not repo.has_object(ids[1]) and repo.has_object(ids[0])
    assert fsck(repo).clean  # history now ends at ids[2]: a missing parent is not an error


def test_keep_younger_than(repo: Repository, tmp_path: Path) -> None:
    ids = _chain(repo, tmp_path, 4)  # timestamps 1_000_000 + 0/1000/2000/3000
    report = prune(repo, refs_only=True, keep_younger_than=1_001_500)
    assert sorted(report.commits) == sorted(ids[:2])
    assert _commit_count(repo) == 2


def test_dry_run_deletes_nothing_and_predicts(repo: Repository, tmp_path: Path) -> None:
    _chain(repo, tmp_path, 4)
    (repo.path / "objects" / "ab" / ("cd" * 31 + ".file")).write_bytes(b"leftover")
    result = cli("--repo", repo.path, "prune", "--refs-only", "--depth", "1", "--dry-run", "--json")
    predicted = json.loads(result.out)
    assert predicted["dry_run"] and _commit_count(repo) == 4
    assert predicted["orphan_files"] == 1 and len(predicted["deleted_commits"]) == 2
    done = json.loads(
        cli("--repo", repo.path, "prune", "--refs-only", "--depth", "1", "--json").out
    )
    assert {k: v for k, v in done.items() if k != "dry_run"} == {
        k: v for k, v in predicted.items() if k != "dry_run"
    }
    assert done["bytes_freed"] > 0 and _commit_count(repo) == 2
    assert not (repo.path / "objects" / "ab" / ("cd" * 31 + ".file")).exists()


def test_other_branches_are_kept(repo: Repository, tmp_path: Path) -> None:
    _chain(repo, tmp_path, 3, "a")
    _chain(repo, tmp_path, 2, "b")
    prune(repo, refs_only=True, depth=0)
    assert _commit_count(repo) == 2
    assert fsck(repo).clean


def test_prune_drops_stat_cache_entries_of_removed_files(
    user_repo: Repository, tmp_path: Path
) -> None:
    import os
    import time

    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_text("one")
    past = time.time() - 100
    os.utime(source / "f", (past, past))
    time.sleep(1.1)
    commit_dir(user_repo, source)
    with user_repo.index.reader() as reader:
        assert len(list(reader.iter_statcache())) == 1
    cli("--repo", user_repo.path, "refs", "--delete", "main")
    prune(user_repo, refs_only=True)
    with user_repo.index.reader() as reader:
        assert list(reader.iter_statcache()) == []
