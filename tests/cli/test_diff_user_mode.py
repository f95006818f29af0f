"""sapwood diff REV DIR compares permission bits; -U compares them as a user-mode
checkout shows them (issue 11)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from store import RepoMode, Repository
from tests.helpers import cli, commit_dir, commit_files


def _farm(tmp_path: Path) -> tuple[Repository, Path]:
    repo = Repository.init(tmp_path / "repo", RepoMode.BARE_USER)
    source = tmp_path / "src"
    commit_files(repo, source, {"bin/tool": "#!/bin/sh\n", "etc/conf": "x=1\n"})
    os.chmod(source / "bin" / "tool", 0o755)
    commit_dir(repo, source)  # main^ and main differ in one mode
    farm = tmp_path / "farm"
    result = cli("--repo", repo.path, "checkout", "-U", "-H", "main", farm)
    assert result.code == 0, result.err
    return repo, farm


def test_a_fresh_user_mode_farm_diffs_clean_and_a_chmod_shows(tmp_path: Path) -> None:
    repo, farm = _farm(tmp_path)
    assert stat.S_IMODE(os.stat(farm / "bin" / "tool").st_mode) == 0o755
    for flag in ("-U", "--user-mode"):
        clean = cli("--repo", repo.path, "diff", flag, "main", farm)
        assert (clean.code, clean.out, clean.err) == (0, "", "")
    os.chmod(farm / "etc" / "conf", 0o600)
    shown = cli("--repo", repo.path, "diff", "-U", "main", farm)
    assert (shown.code, shown.out) == (0, "M    /etc/conf\n")
    as_json = cli("--repo", repo.path, "diff", "-U", "--json", "main", farm)
    assert as_json.code == 0 and '"/etc/conf"' in as_json.out


def test_without_user_mode_the_bits_are_compared_too(tmp_path: Path) -> None:
    repo, farm = _farm(tmp_path)
    assert cli("--repo", repo.path, "diff", "main", farm).out == ""  # nothing was masked
    os.chmod(farm / "bin" / "tool", 0o700)
    assert cli("--repo", repo.path, "diff", "main", farm).out == "M    /bin/tool\n"


def test_user_mode_with_two_commits_is_refused(tmp_path: Path) -> None:
    repo, _ = _farm(tmp_path)
    refused = cli("--repo", repo.path, "diff", "-U", "main^", "main")
    assert refused.code == 2 and refused.out == ""
    assert refused.err.count("\n") == 1 and "-U compares a commit with a directory" in refused.err
    assert "Traceback" not in refused.err
    assert cli("--repo", repo.path, "diff", "main^", "main").out == "M    /bin/tool\n"
