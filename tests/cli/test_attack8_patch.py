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
from tests.helpers import cli, write_tree


def _xattrs_work(path: Path) -> bool:
    try:
        os.setxattr(path, "user.probe", b"1")
    except OSError:
        return False
    return True


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """main~1 -> main: d/ chmod 700, g's xattrs only, h's content."""
    path = tmp_path / "repo"
    assert cli("--repo", path, "init").code == 0
    for version in ("1", "2"):
        tree = write_tree(tmp_path / f"v{version}", {"d/f": "f\n", "g": "g\n", "h": f"{version}\n"})
        if version == "2":
            (tree / "d").chmod(0o700)
            if not _xattrs_work(tree / "g"):
                pytest.skip("needs user xattrs where the test runs")
        done = cli("--repo", path, "commit", "-b", "main", "--timestamp", version, tree)
        assert done.code == 0, done.err
    return path


def _newest_patch(repo: Path) -> bytes:
    shown = cli("--repo", repo, "log", "-p", "main")
    assert shown.code == 0, shown.err
    return shown.raw.split(b"\ncommit ")[0] + b"\n"


def test_changes_git_has_no_words_for_have_a_header_of_their_own(repo: Path) -> None:
    patch = _newest_patch(repo)
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
        tool, input=_newest_patch(repo), cwd=work, capture_output=True, check=False
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

    def alike(self: patch_view._Side, *args: object) -> None:
        original(self, *args)  # type: ignore[arg-type]
        if self.exists:
            self.short_id = "abcdef0"

    monkeypatch.setattr(patch_view._Side, "__init__", alike)
    shown = cli("--repo", path, "log", "-p", "main")
    assert "-old\n+new\n" in shown.out
