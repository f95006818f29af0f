"""log -p cuts lines as git does (at newlines only), and prints each commit as it is
found, as git does, rather than after diffing the whole history.

The expected texts are what `git log -p` prints for the same two versions of a file
(checked by hand with git 2.39), not what sapwood's patch code computes.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from sapwood.cli import log_cmd, patch_view
from sapwood.cli.patch_view import Side
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


def test_each_commit_is_printed_before_the_next_is_diffed(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_tree(tmp_path / "src", {"f": "1\n"})
    for n in range(3):
        (source / "f").write_text(f"{n}\n")
        commit_dir(user_repo, source, timestamp=1_000 + n)
    shown_before: list[int] = []  # commits on stdout when each diff is made
    original = patch_view.patch_chunks  # what log_cmd imports

    def patch_chunks(repo: Repository, changes: Iterable[tuple[Side, Side]]) -> Iterator[bytes]:
        sys.stdout.flush()
        shown = sys.stdout.buffer  # tests.helpers.cli's BytesIO
        assert isinstance(shown, io.BytesIO)
        shown_before.append(len(re.findall(rb"^commit ", shown.getvalue(), re.M)))
        return original(repo, changes)

    monkeypatch.setattr(log_cmd, "patch_chunks", patch_chunks)
    result = cli("--repo", user_repo.path, "log", "-p", "main")
    assert result.code == 0 and result.out.count("diff --git") == 3
    assert shown_before == [1, 2, 3]  # each commit's header, then its diff, file by file


def test_an_empty_file_added_and_deleted_has_git_s_index_line(
    user_repo: Repository, tmp_path: Path
) -> None:
    """git: the header, `index 0000000..e69de29` (its id of the empty blob), no hunk."""
    source = write_tree(tmp_path / "src", {"keep": "k\n"})
    commit_dir(user_repo, source, timestamp=1_000)
    (source / "empty").write_bytes(b"")
    commit_dir(user_repo, source, timestamp=2_000)
    (source / "empty").unlink()
    commit_dir(user_repo, source, timestamp=3_000)
    result = cli("--repo", user_repo.path, "log", "-p", "main", "--", "/empty")
    assert result.code == 0, result.err
    diffs = re.findall(r"^diff --git .*\n(?:[^c\n].*\n)*", result.out, re.M)
    assert [re.sub("(?!0{7})[0-9a-f]{7}", "ID", d) for d in diffs] == [
        "diff --git a/empty b/empty\ndeleted file mode 100644\nindex ID..0000000\n",
        "diff --git a/empty b/empty\nnew file mode 100644\nindex 0000000..ID\n",
    ]
