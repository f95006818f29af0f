"""attack8.md 9: an error line echoed a long input whole (`rev-parse main@{<5,000
characters>}` printed a 5 KB line, `log main -- <300-character name>` twice that): each
long word is cut in its middle, the line too, and what says what is wrong stays."""

from __future__ import annotations

from pathlib import Path

from sapwood.cli.errors import LINE_LIMIT, WORD_LIMIT, bounded
from store import Repository
from tests.helpers import cli, commit_dir, write_tree


def _one_line(repo: Path, *args: str) -> str:
    done = cli("--repo", repo, *args)
    assert done.code != 0 and done.out == ""
    assert done.err.count("\n") == 1 and done.err.startswith("sapwood: error: ")
    return done.err


def test_a_long_revision_is_cut(user_repo: Repository, tmp_path: Path) -> None:
    commit_dir(user_repo, write_tree(tmp_path / "t", {"a": "1\n"}))
    line = _one_line(user_repo.path, "rev-parse", "main@{" + "x" * 5000 + "}")
    assert len(line) < 400
    assert line.startswith("sapwood: error: main@{xxxx")
    assert "xxxx[... 4,783 characters ...]xxxx" in line
    assert "xxxx}: not a date: 'xxxx" in line
    assert line.endswith("is longer than 64 characters\n")


def test_a_long_name_is_cut_wherever_it_is_echoed(user_repo: Repository, tmp_path: Path) -> None:
    commit_dir(user_repo, write_tree(tmp_path / "t", {"a": "1\n"}))
    line = _one_line(user_repo.path, "log", "main", "--", "/" + "y" * 300)
    assert len(line) < 2 * WORD_LIMIT + 100
    assert line.count("[... ") == 2  # the name, and the path that holds it
    assert line.endswith("y: longer than 255 bytes\n")


def test_what_is_short_is_left_as_it_is() -> None:
    text = "log: '' is not a PATH (the whole tree is /)"
    assert bounded(text) == text
    word = "z" * (WORD_LIMIT - 1) + ":"  # a word ends at a space
    assert bounded(f"{word} no such ref") == f"{word} no such ref"


def test_many_words_are_cut_to_one_bounded_line() -> None:
    words = " ".join(f"/path{n:04}" + "p" * 90 for n in range(100))
    text = bounded(f"unrecognized arguments: {words} (PATHs go after --)")
    assert len(text) <= LINE_LIMIT + 40
    assert text.startswith("unrecognized arguments: /path0000")
    assert text.endswith("/path0099" + "p" * 90 + " (PATHs go after --)")
