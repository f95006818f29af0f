"""fsck --all beside a running commit (attack-scale.md 4): the files a commit publishes a
moment before its index lists them are not called prune's garbage, and the files of a
commit that ended during fsck are not counted at all."""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from store import Repository, TaskProgress, fsck, prune
from store.locking import repo_lock, try_lock_dir
from store.unlisted import WAITING
from tests.helpers import cli, run, write_tree

LEFTOVER = "cd" * 31 + ".file"


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "repo"
    assert cli("--repo", path, "init").code == 0
    tree = write_tree(tmp_path / "tree", {"a": "one\n", "d/b": "two\n"})
    assert cli("--repo", path, "commit", "-b", "main", "--timestamp", "0", tree).code == 0
    (path / "objects" / "ab").mkdir(exist_ok=True)
    (path / "objects" / "ab" / LEFTOVER).write_bytes(b"leftover")
    yield path


def test_leftovers_beside_no_writer_are_prunes(repo: Path) -> None:
    done = cli("--repo", repo, "fsck", "--all")
    assert done.code == 0, done.err
    assert done.out.endswith("; 1 unlisted file (prune removes them)\n")
    shown = json.loads(cli("--repo", repo, "fsck", "--all", "--json").out)
    assert shown["orphan_files"] == 1 and shown["writer_running"] is False


def test_unlisted_files_beside_a_running_commit_may_be_its(repo: Path) -> None:
    staging = repo / "tmp" / "staging-test-0123456789ab"
    staging.mkdir(parents=True)
    held = try_lock_dir(staging)  # as a running transaction holds its staging directory
    assert held is not None
    try:
        done = cli("--repo", repo, "fsck", "--all")
        shown = json.loads(cli("--repo", repo, "fsck", "--all", "--json").out)
    finally:
        os.close(held)
    assert done.code == 0, done.err
    assert "1 unlisted file (a commit or pull is running: they may be its" in done.out
    assert "(prune removes them)" not in done.out
    assert shown["writer_running"] is True
    assert "(prune removes them)" in cli("--repo", repo, "fsck", "--all").out  # let go: as before


def test_files_of_a_commit_that_ended_during_fsck_are_not_unlisted(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsck's reader is older than a commit that ran while it listed objects/: the
    commit's files are listed by the index when fsck reports, so they are not counted."""
    checker = sys.modules["store.fsck"]
    real = checker.unlisted_files
    tree = write_tree(tmp_path / "new", {f"n{i}": f"new content {i}\n" for i in range(20)})

    def commit_first(*args: Any) -> list[Path]:
        committed = run("--repo", repo, "commit", "-b", "other", tree)
        assert committed.returncode == 0, committed.stderr
        found: list[Path] = real(*args)
        assert len(found) > 1  # the old reader does not list the new commit's files
        return found

    monkeypatch.setattr(checker, "unlisted_files", commit_first)
    with Repository.open(repo) as opened:
        report = fsck(opened, all_objects=True)
    assert report.clean and report.orphan_files == 1 and not report.writer_running


def test_walk_and_listing_are_counted_to_their_totals(repo: Path) -> None:
    """The tree walk counts the commits it starts from, the listing of objects/ its
    directories: each phase ends at its total (a timer alone said nothing of how far)."""
    directories = len([d for d in os.listdir(repo / "objects") if not d.startswith(".")])
    seen: list[TaskProgress] = []
    with Repository.open(repo) as opened:
        fsck(opened, all_objects=True, progress=seen.append)
        _assert_counted(seen, "reading trees", 1, "commit")
        _assert_counted(seen, "finding unlisted files", directories, "dir")
        assert seen[-1].phase == "checking"  # the long phase's count is the one left shown
        seen.clear()
        prune(opened, dry_run=True, progress=seen.append)
    _assert_counted(seen, "reading trees", 1, "commit")
    _assert_counted(seen, "finding unlisted files", directories, "dir")


def _assert_counted(seen: list[TaskProgress], phase: str, total: int, unit: str) -> None:
    counts = [s for s in seen if s.phase == phase]
    assert counts and counts[0].done == 0 and counts[-1].done == total, counts
    assert {(s.total, s.unit) for s in counts} == {(total, unit)}


@pytest.mark.parametrize("command", ["prune", "fsck --delete"])
def test_an_exclusive_lock_says_it_waits_for_a_running_writer(repo: Path, command: str) -> None:
    """prune and fsck --delete wait for the exclusive lock behind a commit (minutes
    behind a big one): the first thing they report is why (they waited without a word)."""
    staging = repo / "tmp" / "staging-test-0123456789ab"
    staging.mkdir(parents=True)
    held = try_lock_dir(staging)
    assert held is not None
    seen: list[TaskProgress] = []
    run_it = prune if command == "prune" else functools.partial(fsck, delete=True)
    with Repository.open(repo) as opened:
        with repo_lock(repo, exclusive=False):  # as the writer holds it
            waiting = threading.Thread(
                target=run_it, args=(opened,), kwargs={"progress": seen.append}
            )
            waiting.start()
            waiting.join(timeout=1.0)
            assert waiting.is_alive()  # waiting for the lock
            assert [s.phase for s in seen] == [WAITING]
        os.close(held)
        waiting.join(timeout=60)
        assert not waiting.is_alive() and seen[-1].phase in ("deleting", "checking")
        seen.clear()
        run_it(opened, progress=seen.append)
    assert seen[0].phase == "reading trees"  # no writer: no word of waiting
