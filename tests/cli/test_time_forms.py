"""commit --timestamp and prune --keep-younger-than take the dates REV@{DATE} takes
(@SECONDS, 'N days ago', yesterday, now) besides seconds and ISO 8601, as before."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.helpers import cli, write_tree


def _committed_at(repo: Path, tree: Path, when: str, branch: str = "main") -> int:
    done = cli("--repo", repo, "commit", "-b", branch, "--timestamp", when, tree)
    assert done.code == 0, done.err
    shown = json.loads(cli("--repo", repo, "log", "--json", branch).out)
    return int(shown[0]["timestamp"])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    assert cli("--repo", path, "init").code == 0
    return path


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("100", 100),  # the forms of before
        ("-5", -5),
        ("2026-11-01", 1793491200),
        ("2026-11-01T12:00:00+02:00", 1793491200 + 10 * 3600),
        ("2026-11-01 12:00:00.75", 1793491200 + 12 * 3600),
        ("@1730000000", 1730000000),  # REV@{DATE}'s
        ("2026-11-01T120000Z", 1793491200 + 12 * 3600),
    ],
)
def test_commit_timestamp_forms(repo: Path, tmp_path: Path, when: str, expected: int) -> None:
    tree = write_tree(tmp_path / "t", {"a": "1\n"})
    assert _committed_at(repo, tree, when) == expected


def test_commit_timestamp_counts_back_from_now(repo: Path, tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "t", {"a": "1\n"})
    before = int(time.time())
    got = _committed_at(repo, tree, "3 days ago")
    assert before - 3 * 86400 <= got <= int(time.time()) - 3 * 86400
    assert abs(_committed_at(repo, tree, "yesterday", "y") - (before - 86400)) <= 5


def test_prune_keeps_younger_than_n_weeks_ago(repo: Path, tmp_path: Path) -> None:
    old = write_tree(tmp_path / "old", {"a": "old\n"})
    new = write_tree(tmp_path / "new", {"a": "new\n"})
    _committed_at(repo, old, "5 weeks ago")
    _committed_at(repo, new, "1 week ago")
    _committed_at(repo, new, "2 days ago", "side")  # keeps new's objects reachable: its tree
    dry = cli("--repo", repo, "prune", "--keep-younger-than", "2.weeks.ago", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    assert len(json.loads(dry.out)["deleted_commits"]) == 1  # the 5-week-old one
    none = cli("--repo", repo, "prune", "--keep-younger-than", "6 weeks ago", "--dry-run", "--json")
    assert json.loads(none.out)["deleted_commits"] == []


@pytest.mark.parametrize("when", ["3 dayz ago", "5 months ago", "someday", "@", "x" * 5000])
def test_bad_times_are_one_line_and_change_nothing(repo: Path, tmp_path: Path, when: str) -> None:
    tree = write_tree(tmp_path / "t", {"a": "1\n"})
    done = cli("--repo", repo, "commit", "-b", "main", "--timestamp", when, tree)
    assert done.code == 2 and done.out == ""
    assert done.err.startswith("sapwood: error: not a time: ") and done.err.count("\n") == 1
    assert len(done.err) < 200
    assert cli("--repo", repo, "refs").out == ""
    pruned = cli("--repo", repo, "prune", "--keep-younger-than", when)
    assert pruned.code == 2 and "not a time" in pruned.err and pruned.out == ""
