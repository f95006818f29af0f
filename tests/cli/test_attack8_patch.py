"""attack8.md 4-5: log -p of a commit that changes a directory's mode, or only a file's
xattrs, is still a patch git apply and patch(1) take (under "diff --git" git apply
refused it whole: "d: wrong type", "inconsistent old filename"); and whether a file's
content changed is decided on its whole id, never on the seven digits shown."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sapwood.cli import patch_view
from store import Repository
from tests.helpers import cli, cli_commits, newest_patch, write_tree


def _xattrs_work(path: Path) -> bool:
    try:
        os.setxattr(path, "user.probe", b"1")
    except OSError:
        return False
    return True


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """main~1 -> main: d/ chmod 700, g's xattrs only, h's content."""
    trees = [
        write_tree(tmp_path / f"v{version}", {"d/f": "f\n", "g": "g\n", "h": f"{version}\n"})
        for version in ("1", "2")
    ]
    (trees[1] / "d").chmod(0o700)
    if not _xattrs_work(trees[1] / "g"):
        pytest.skip("needs user xattrs where the test runs")
    return cli_commits(tmp_path / "repo", *trees)


def test_changes_git_has_no_words_for_have_a_header_of_their_own(repo: Path) -> None:
    patch = newest_patch(repo)
    assert b"diff --sapwood a/d b/d\nold mode 040755\nnew mode 040700\n" in patch
    assert b"diff --sapwood a/g b/g\nxattrs changed\n" in patch
    assert b"diff --git a/h b/h\n" in patch and b"diff --git a/d " not in patch


@pytest.mark.parametrize("tool", [["git", "apply", "-"], ["patch", "-p1", "-s"]])
def test_git_apply_and_patch_take_it(repo: Path, tmp_path: Path, tool: list[str]) -> None:
    if shutil.which(tool[0]) is None:
        pytest.skip(f"needs {tool[0]}")
    work = tmp_path / "work"
    assert cli("--repo", repo, "checkout", "-U", "main~1", work).code == 0
    applied = subprocess.run(
        tool, input=newest_patch(repo), cwd=work, capture_output=True, check=False
    )
    assert applied.returncode == 0, applied.stderr
    assert (work / "h").read_text() == "2\n"


def test_a_change_is_found_when_the_shown_ids_are_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two contents whose ids share their first seven digits (found with 2**28 tries,
    cheap to a hostile committer) are still a change with its hunk."""
    path = tmp_path / "repo"
    assert cli("--repo", path, "init").code == 0
    for version in ("old", "new"):
        tree = write_tree(tmp_path / version, {"f": f"{version}\n"})
        assert cli("--repo", path, "commit", "-b", "main", tree).code == 0
    original = patch_view._Side.__init__

    def alike(self: patch_view._Side, repo: Repository, node: patch_view.Side) -> None:
        original(self, repo, node)
        if self.exists:
            self.short_id = "abcdef0"

    monkeypatch.setattr(patch_view._Side, "__init__", alike)
    shown = cli("--repo", path, "log", "-p", "main")
    assert "-old\n+new\n" in shown.out


def test_a_symlinks_mode_is_gits(tmp_path: Path) -> None:
    """attack8.md 11: a symlink's mode was written 120777; git writes 120000 (new,
    deleted, and on the index line of a changed target). A file's stays whole."""
    one = write_tree(tmp_path / "one", {"old": "->a", "moved": "->a", "f": "f\n"})
    two = write_tree(tmp_path / "two", {"new": "->b", "moved": "->c", "f": "f\n"})
    (two / "f").chmod(0o600)
    repo = cli_commits(tmp_path / "repo", one, two)
    patch = newest_patch(repo)
    assert b"diff --git a/new b/new\nnew file mode 120000\n" in patch
    assert b"diff --git a/old b/old\ndeleted file mode 120000\n" in patch
    assert b"diff --git a/moved b/moved\nindex " in patch
    assert b" 120000\n--- a/moved\n+++ b/moved\n@@ -1 +1 @@\n-a\n\\ No newline" in patch
    assert b"old mode 100644\nnew mode 100600\n" in patch
    assert b"120777" not in patch
    if shutil.which("git") is not None:
        work = tmp_path / "work"
        assert cli("--repo", repo, "checkout", "-U", "main~1", work).code == 0
        applied = subprocess.run(
            ["git", "apply", "-"], input=patch, cwd=work, capture_output=True, check=False
        )
        assert applied.returncode == 0, applied.stderr
        assert os.readlink(work / "moved") == "c" and os.readlink(work / "new") == "b"
