"""log -p cuts lines as git does: at newlines only.

The expected texts are what `git log -p` prints for the same two versions of a file
(checked by hand with git 2.39), not what sapwood's patch code computes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from store import Repository
from tests.helpers import cli, commit_dir, write_tree


def _patch(repo: Repository, tmp_path: Path, before: bytes, after: bytes) -> str:
    """The hunks `log -p main -- /f` prints for the commit that changed /f."""
    source = write_tree(tmp_path / "src", {"f": before})
    commit_dir(repo, source, timestamp=1_000)
    (source / "f").write_bytes(after)
    commit_dir(repo, source, timestamp=2_000)
    result = cli("--repo", repo.path, "log", "-p", "main", "--", "/f")
    assert result.code == 0, result.err
    newest = result.out[: result.out.index("\ncommit ") + 1]  # up to the older commit
    return newest[newest.index("@@") :]


@pytest.mark.parametrize(
    ("before", "after", "hunks"),
    [
        (  # a carriage return inside a line is part of the line
            b"one\rtwo\nthree\n",
            b"one\rTWO\nthree\n",
            "@@ -1,2 +1,2 @@\n-one\rtwo\n+one\rTWO\n three\n",
        ),
        (  # a last line without a newline says so, on each side
            b"a\nb",
            b"a\nc",
            "@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n"
            "+c\n\\ No newline at end of file\n",
        ),
        (  # a newline added at the end
            b"a\r",
            b"a\r\n",
            "@@ -1 +1 @@\n-a\r\n\\ No newline at end of file\n+a\r\n",
        ),
    ],
)
def test_lines_are_cut_at_newlines_only(
    user_repo: Repository, tmp_path: Path, before: bytes, after: bytes, hunks: str
) -> None:
    assert _patch(user_repo, tmp_path, before, after) == hunks
