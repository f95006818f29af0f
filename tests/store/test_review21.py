"""Review 21 (session 16): hostile review of 7d95f1b (static-delta work directories by
flock) and 181d8aa (Transaction.link_file with a descriptor).

A passing test guards a defence; a strict xfail naming "review21 N" is a defect
(/work/plan/review21.md describes each and its fix)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from store import RepoMode, Repository
from store.delta_work import remove_leftovers
from store.deltas import generate_delta
from store.summary import list_deltas
from tests.helpers import commit_files

# A generate of an already published delta, killed (SIGKILL: no handler runs) right after
# the rename given by argv[3]: "old" (the published delta renamed .old-), "tmp" (the new
# one renamed into place), "new" (its .new- directory renamed .tmp-).
_KILLED_GENERATE = """
import os, sys
from store.ids import ObjectId
from store.repo import Repository
import store.deltas as deltas
real = os.rename
def rename(src, dst, *args, **kwargs):
    real(src, dst, *args, **kwargs)
    after = sys.argv[3]
    if os.path.basename(str(src if after != "old" else dst)).startswith("." + after + "-"):
        os.kill(os.getpid(), 9)
os.rename = rename
repo = Repository.open(sys.argv[1])
deltas.generate_delta(repo, None, ObjectId(bytes.fromhex(sys.argv[2])), part_size=4096)
"""


def _killed_generate(repo: Path, commit: str, after: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_GENERATE, str(repo), commit, after],
        capture_output=True,
        cwd=Path(__file__).parents[2],
        timeout=300,
    )
    assert child.returncode == -9, child.stderr.decode()[-2000:]


def _repo_with_a_delta(tmp_path: Path) -> tuple[Repository, str]:
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    v1 = commit_files(repo, tmp_path / "v1", {f"f{n}": os.urandom(3000) for n in range(8)})
    generate_delta(repo, None, v1)  # published
    return repo, v1.hex()


@pytest.mark.parametrize("after", ["new", "tmp"])
def test_a_generate_killed_at_a_step_leaves_the_delta_and_no_leftover(
    tmp_path: Path, after: str
) -> None:
    repo, v1 = _repo_with_a_delta(tmp_path)
    before = list_deltas(repo.path)
    _killed_generate(repo.path, v1, after)
    remove_leftovers(repo.path / "deltas")  # at once: the killed one holds no lock
    assert not [p.name for p in (repo.path / "deltas").iterdir() if p.name.startswith(".")]
    assert set(list_deltas(repo.path)) == set(before) != set()


def test_a_generate_killed_between_its_two_renames_loses_no_published_delta(
    tmp_path: Path,
) -> None:
    """review21 10 (fixed in 76b0637): a generate killed between renaming the published
    delta .old- and renaming its own into place leaves neither: the next generate or
    prune removes both leftovers, and the delta clients were told of is gone"""
    repo, v1 = _repo_with_a_delta(tmp_path)
    before = list_deltas(repo.path)
    _killed_generate(repo.path, v1, "old")
    remove_leftovers(repo.path / "deltas")
    assert set(list_deltas(repo.path)) == set(before)


def test_two_generates_of_one_delta_at_once_both_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """review21 14 (fixed in eedaf34): the second of two generates of one delta to
    publish failed (its rename onto the first's: Directory not empty)."""
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    v1 = commit_files(repo, tmp_path / "v1", {f"f{n}": os.urandom(3000) for n in range(8)})
    real_rename = os.rename
    other_done: list[Path] = []
    started: list[bool] = []

    def another_publishes_first(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        # the other generate (as if in another process) publishes between this one's
        # look for a published delta and its rename into place
        if not started and os.path.basename(str(src)).startswith(".tmp-"):
            started.append(True)
            other_done.append(generate_delta(repo, None, v1))
        real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", another_publishes_first)
    generate_delta(repo, None, v1)
    monkeypatch.undo()
    assert other_done and set(list_deltas(repo.path)) == {(None, v1)}


def test_a_deleted_delta_does_not_come_back(tmp_path: Path) -> None:
    from store.deltas import remove_delta
    from store.ids import ObjectId

    repo, v1 = _repo_with_a_delta(tmp_path)
    _killed_generate(repo.path, v1, "old")  # the published delta is .old-NAME-L... now
    remove_delta(repo, None, ObjectId(bytes.fromhex(v1)))  # the administrator's delete
    remove_leftovers(repo.path / "deltas")  # the next generate's or prune's
    assert list_deltas(repo.path) == {}
