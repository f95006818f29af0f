"""PATHs after '--': diff and log follow one rule (sapwood/cli/separator.py).

A word before '--' is never a PATH (diff took `diff A B x -- y` as two paths, log
refused it); everything after '--' may be, however many commits came first
(`log -- REV x y` was refused as if x were before '--').
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import cli


@pytest.mark.parametrize(
    "args",
    [
        ("diff", "main^", "main", "/y", "--", "/etc"),
        ("log", "main", "/y", "--", "/etc"),
        ("diff", "main^", "main", "/y"),
        ("log", "main", "/y"),
    ],
)
def test_a_path_before_the_separator_is_refused(two_commits: Path, args: tuple[str, ...]) -> None:
    result = cli("--repo", two_commits, *args)
    assert (result.code, result.out) == (2, "")
    assert result.err.count("\n") == 1
    assert f"{args[0]}: unrecognized arguments: /y (PATHs go after --)" in result.err


@pytest.mark.parametrize("command", [("diff", "main^", "main"), ("log", "main")])
def test_a_separator_with_nothing_after_it_is_refused(
    two_commits: Path, command: tuple[str, ...]
) -> None:
    result = cli("--repo", two_commits, *command, "--")
    assert (result.code, result.out) == (2, "")
    assert f"{command[0]}: -- needs at least one PATH after it" in result.err


def test_every_word_after_the_separator_is_a_path(two_commits: Path) -> None:
    diff = cli("--repo", two_commits, "diff", "--", "main^", "main", "/y", "/etc")
    assert (diff.code, diff.out.split()) == (0, ["M", "/etc/x", "M", "/y"])
    log = cli("--repo", two_commits, "log", "--json", "--", "main", "/y", "/etc")
    assert log.code == 0, log.err
    assert log.out.count('"commit"') == 2 and '"paths"' in log.out
    whole = cli("--repo", two_commits, "diff", "--", "main^", "main")
    assert (whole.code, whole.out.split()) == (0, ["M", "/etc/x", "M", "/y"])


@pytest.mark.parametrize(
    ("options_between", "options_first"),
    [
        (("log", "main", "-p", "--", "/etc"), ("log", "-p", "main", "--", "/etc")),
        (("log", "main", "--json", "--", "/etc"), ("log", "--json", "main", "--", "/etc")),
        (
            ("diff", "main^", "main", "--stat", "--", "/etc"),
            ("diff", "--stat", "main^", "main", "--", "/etc"),
        ),
    ],
)
def test_an_option_between_the_revisions_and_the_separator(
    two_commits: Path, options_between: tuple[str, ...], options_first: tuple[str, ...]
) -> None:
    """`log main -p -- /etc` is what git users type: argparse gave REV its word, the
    PATHs none, and refused '-- /etc' as unrecognized (attack11.md 10). It reads as the
    options written first do, and only /etc's change shows."""
    between = cli("--repo", two_commits, *options_between)
    first = cli("--repo", two_commits, *options_first)
    assert (between.code, between.err) == (0, "")
    assert between.out == first.out
    assert "/etc" in between.out and "/y" not in between.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("log", "main", "-p", "--", ""), "log: '' is not a PATH"),
        (("log", "main", "-p", "--"), "log: -- needs at least one PATH after it"),
        (("diff", "main^", "main", "--stat", "--"), "diff: -- needs at least one PATH"),
    ],
)
def test_an_option_before_a_bad_separator_keeps_its_message(
    two_commits: Path, args: tuple[str, ...], message: str
) -> None:
    result = cli("--repo", two_commits, *args)
    assert (result.code, result.out) == (2, "")
    assert message in result.err and result.err.count("\n") == 1
