"""attack8.md 1-2: a date given empty is refused (it read as no date at all: the commit
took the clock, prune kept every commit), and a date of a recognised form that cannot
be held says why (it listed the forms, @SECONDS among them, for '@99999999999999999999')."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli, write_tree


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    assert cli("--repo", path, "init").code == 0
    return path


def test_an_empty_timestamp_is_refused(repo: Path, tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "t", {"a": "1\n"})
    done = cli("--repo", repo, "commit", "-b", "main", "--timestamp", "", tree)
    assert done.code == 2 and done.out == ""
    assert done.err.startswith("sapwood: error: not a time: ''") and done.err.count("\n") == 1
    assert cli("--repo", repo, "refs").out == ""


def test_an_empty_keep_younger_than_is_refused(repo: Path, tmp_path: Path) -> None:
    tree = write_tree(tmp_path / "t", {"a": "1\n"})
    assert cli("--repo", repo, "commit", "-b", "main", "--timestamp", "0", tree).code == 0
    pruned = cli("--repo", repo, "prune", "--keep-younger-than", "", "--json")
    assert pruned.code == 2 and pruned.out == ""
    assert pruned.err.startswith("sapwood: error: not a time: ''")


@pytest.mark.parametrize(
    ("when", "reason"),
    [
        ("@99999999999999999999", "out of range"),
        ("@-99999999999999999999", "out of range"),
        ("99999999999999999 weeks ago", "too far back"),
        ("10000-01-01", "year must be between"),
        ("2026-11-01T12:00+24:00", "no time zone"),
    ],
)
def test_a_date_out_of_range_says_why(repo: Path, tmp_path: Path, when: str, reason: str) -> None:
    tree = write_tree(tmp_path / "t", {"a": "1\n"})
    done = cli("--repo", repo, "commit", "-b", "main", "--timestamp", when, tree)
    assert done.code == 2 and done.out == ""
    assert done.err.startswith("sapwood: error: not a time: ") and done.err.count("\n") == 1
    assert reason in done.err and len(done.err) < 200
    pruned = cli("--repo", repo, "prune", "--keep-younger-than", when, "--json")
    assert pruned.code == 2 and reason in pruned.err


def test_a_future_date_keeps_the_heads(repo: Path, tmp_path: Path) -> None:
    """The far future drops every commit but the heads, as asked, and no head's objects."""
    for n, when in enumerate(("@-9223372036854775808", "0", "9999-12-31T23:59:59-23:59")):
        tree = write_tree(tmp_path / f"t{n}", {"a": f"{n}\n"})
        assert cli("--repo", repo, "commit", "-b", "main", "--timestamp", when, tree).code == 0
    pruned = cli("--repo", repo, "prune", "--keep-younger-than", "@9223372036854775807", "--json")
    assert pruned.code == 0, pruned.err
    assert len(json.loads(pruned.out)["deleted_commits"]) == 2
    shown = cli("--repo", repo, "cat", "main", "/a")
    assert shown.out == "2\n"
    assert cli("--repo", repo, "fsck").code == 0


def _committed_at(repo: Path, tree: Path, when: str) -> int:
    done = cli("--repo", repo, "commit", "-b", "main", "--timestamp", when, tree)
    assert done.code == 0, done.err
    return int(json.loads(cli("--repo", repo, "log", "--json", "main").out)[0]["timestamp"])


@pytest.mark.parametrize("option", ["--timestamp", "--keep-younger-than"])
def test_eight_digits_that_are_a_date_are_refused(repo: Path, tmp_path: Path, option: str) -> None:
    """attack8.md 10: `--timestamp 20261101` was 1970-08-23 (seconds); git reads it as
    2026-11-01. Neither reading is taken silently: the line gives both spellings."""
    tree = write_tree(tmp_path / "t", {"a": "1\n"})
    command = ("commit", "-b", "main", tree) if option == "--timestamp" else ("prune",)
    done = cli("--repo", repo, *command, option, "20261101")
    assert (done.code, done.out) == (2, "") and done.err.count("\n") == 1
    assert "not a time: 20261101 reads as seconds or, as git reads it, as the date" in done.err
    assert done.err.endswith(
        "write @20261101 for seconds since the epoch or 2026-11-01 for the date\n"
    )
    assert cli("--repo", repo, "refs").out == ""


@pytest.mark.parametrize(
    ("when", "seconds"),
    [
        ("12345678", 12345678),  # eight digits, but no date (month 34): seconds
        ("20261301", 20261301),  # month 13
        ("1234567", 1234567),
        ("-20261101", -20261101),
        ("@20261101", 20261101),
        ("2026-11-01", 1793491200),
        ("1969-12-31T23:59:59.5", -1),  # floor, as for every other time: it said 0
    ],
)
def test_numbers_that_are_no_date_stay_seconds(
    repo: Path, tmp_path: Path, when: str, seconds: int
) -> None:
    tree = write_tree(tmp_path / "t", {"a": "1\n"})
    assert _committed_at(repo, tree, when) == seconds
