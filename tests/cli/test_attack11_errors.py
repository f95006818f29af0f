"""attack11.md 8: an error line's cut counts a backslash escape (the library writes an
undecodable byte as \\xff) as the one character it stands for, and never splits one."""

from __future__ import annotations

import re
from pathlib import Path

from sapwood.cli.errors import WORD_LIMIT, bounded
from tests.helpers import cli

NAME = b"\xff" * 250  # a file name of undecodable bytes, near the longest a name can be


def test_a_name_of_undecodable_bytes_is_shown_whole(tmp_path: Path) -> None:
    """Four characters a byte, the name passed WORD_LIMIT and its middle was cut: the
    line did not say which file differed."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / NAME.decode("utf-8", "surrogateescape")).write_text("committed\n")
    repo, dest = tmp_path / "repo", tmp_path / "dest"
    assert cli("--repo", repo, "init").code == 0
    assert cli("--repo", repo, "commit", "-b", "main", tree).code == 0
    assert cli("--repo", repo, "checkout", "-U", "main", dest).code == 0
    (dest / NAME.decode("utf-8", "surrogateescape")).write_text("changed\n")
    done = cli("--repo", repo, "checkout", "-U", "-H", "--union-identical", "main", dest)
    assert done.code != 0 and done.err.count("\n") == 1
    assert "[... " not in done.err
    assert "/" + "\\xff" * 250 + ": File exists and differs" in done.err


def test_a_cut_never_splits_an_escape() -> None:
    for escape in ("\\xff", "\\377", "\\u202e", "\\n", "\\\\"):
        line = bounded(f"bad name {escape * 2000}: no such file")
        head, note, tail = re.split(r"(\[\.\.\. [0-9,]+ characters \.\.\.\])", line)
        assert note == "[... 1,776 characters ...]"  # 2,000 escapes and the colon
        assert head == "bad name " + escape * (WORD_LIMIT // 2)
        assert tail == escape * (WORD_LIMIT // 4 - 1) + ": no such file"


def test_a_long_plain_word_is_still_cut() -> None:
    assert "[... 4,775 characters ...]" in bounded("x" * 5000)
