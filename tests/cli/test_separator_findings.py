"""`-- ""` is refused as git refuses an empty pathspec (review6.md 16: it meant the whole
tree), and `log -- /usr` says the REV is missing (attack-history.md 21: it said there was
no such ref or commit '/usr'), while `log -- main` and `diff -- A B` work as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import cli


@pytest.mark.parametrize(
    "args",
    [
        ("log", "main", "--", ""),
        ("log", "-p", "main", "--", "/etc", ""),
        ("diff", "main^", "main", "--", ""),
        ("diff", "--stat", "main^", "main", "--", "", "/y"),
    ],
)
def test_an_empty_path_is_refused(two_commits: Path, args: tuple[str, ...]) -> None:
    result = cli("--repo", two_commits, *args)
    assert (result.code, result.out) == (2, "")
    assert result.err == f"sapwood: error: {args[0]}: '' is not a PATH (the whole tree is /)\n"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("log", "--", "/usr"), "log: /usr after -- is a PATH, and log REV -- PATH... needs a"),
        (("log", "-p", "--", "/etc", "/y"), "log: /etc after -- is a PATH"),
        (("diff", "--", "/etc", "main"), "diff: /etc after -- is a PATH, and diff A B -- PATH"),
    ],
)
def test_a_path_read_as_the_revision_says_so(
    two_commits: Path, args: tuple[str, ...], says: str
) -> None:
    result = cli("--repo", two_commits, *args)
    assert (result.code, result.out) == (2, "") and result.err.count("\n") == 1
    assert says in result.err and "no HEAD" in result.err


def test_revisions_after_the_separator_still_work(two_commits: Path) -> None:
    assert cli("--repo", two_commits, "log", "--", "main").code == 0
    assert cli("--repo", two_commits, "log", "--", "main", "/y").out.count("commit ") == 2
    whole = cli("--repo", two_commits, "diff", "main^", "main")
    assert cli("--repo", two_commits, "diff", "--", "main^", "main").out == whole.out
    assert cli("--repo", two_commits, "diff", "main^", "main", "--", "/").out == whole.out
