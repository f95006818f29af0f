"""attack11.md: the dates the command line prints are dates it takes back, and what it
takes is what it means."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli, write_tree


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    assert cli("--repo", path, "init").code == 0
    for n, when in enumerate(("2026-11-01T12:00:00Z", "2026-11-02T12:00:00Z")):
        tree = write_tree(tmp_path / f"t{n}", {"a": f"{n}\n"})
        done = cli("--repo", path, "commit", "-b", "main", "--timestamp", when, tree)
        assert done.code == 0, done.err
    return path


def _dates(repo: Path) -> list[str]:
    shown = cli("--repo", repo, "log", "main")
    assert shown.code == 0, shown.err
    return [
        line.split(":", 1)[1].strip() for line in shown.out.splitlines() if line.startswith("Date:")
    ]


def test_rev_at_the_date_log_prints_is_that_commit(repo: Path) -> None:
    """attack11.md 5: log prints 'Date:  2026-11-01 12:00:00 +0000'; main@{that} was
    refused ('not a date'), where git takes the dates it prints."""
    newest, older = _dates(repo)
    assert older == "2026-11-01 12:00:00 +0000"
    ids = json.loads(cli("--repo", repo, "log", "--json", "main").out)
    for date, entry in ((newest, ids[0]), (older, ids[1])):
        found = cli("--repo", repo, "rev-parse", f"main@{{{date}}}")
        assert found.code == 0, found.err
        assert found.out.strip() == entry["commit"]


def test_the_date_log_prints_is_a_timestamp_too(repo: Path, tmp_path: Path) -> None:
    (older_date,) = _dates(repo)[1:]
    tree = write_tree(tmp_path / "again", {"a": "again\n"})
    done = cli("--repo", repo, "commit", "-b", "other", "--timestamp", older_date, tree)
    assert done.code == 0, done.err
    assert _dates_of(repo, "other") == [older_date]


def _dates_of(repo: Path, rev: str) -> list[str]:
    shown = cli("--repo", repo, "log", rev)
    return [
        line.split(":", 1)[1].strip() for line in shown.out.splitlines() if line.startswith("Date:")
    ]


@pytest.mark.parametrize("when", ["2026-11-01x12:00", "2026-11-01\n12:00", "2026-11-01-12:00"])
def test_a_date_and_time_joined_by_anything_else_is_refused(
    repo: Path, tmp_path: Path, when: str
) -> None:
    """attack11.md 4: Python's fromisoformat takes any one character between the date
    and the time: '2026-11-01-12:00' (a typo) and a newline were 12:00 that day."""
    tree = write_tree(tmp_path / "t", {"a": "x\n"})
    done = cli("--repo", repo, "commit", "-b", "other", "--timestamp", when, tree)
    assert (done.code, done.out) == (2, "") and done.err.count("\n") == 1
    assert done.err.startswith("sapwood: error: not a time: ")
    assert cli("--repo", repo, "log", "other").code != 0  # no branch was made


@pytest.mark.parametrize(
    ("when", "seconds"),
    [
        ("2026-11-01T12:00:00,5+02:00", 1793527200),
        ("2026-11-01 12:00 +02:00", 1793527200),
        ("20261101T1200", 1793534400),
        ("2026-W44-7", 1793491200),
    ],
)
def test_iso_forms_with_a_t_or_a_space_stay(
    repo: Path, tmp_path: Path, when: str, seconds: int
) -> None:
    tree = write_tree(tmp_path / "t", {"a": "x\n"})
    done = cli("--repo", repo, "commit", "-b", "other", "--timestamp", when, tree)
    assert done.code == 0, done.err
    assert json.loads(cli("--repo", repo, "log", "--json", "other").out)[0]["timestamp"] == seconds
