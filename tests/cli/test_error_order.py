"""When an invocation is wrong in two ways, the command names the same one it always
did: the facade must not change which check runs first."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import cli


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    assert cli("--repo", repo, "init").code == 0
    return repo


def test_a_bad_branch_is_named_before_a_bad_parent(tmp_path: Path) -> None:
    repo, src = _repo(tmp_path), tmp_path / "src"
    src.mkdir()
    result = cli("--repo", repo, "commit", "-b", "bad..name", "--parent", "nosuch", src)
    assert result.code == 1
    assert "invalid ref name 'bad..name'" in result.err and "nosuch" not in result.err


def test_no_layers_is_named_before_a_bad_parent(tmp_path: Path) -> None:
    result = cli("--repo", _repo(tmp_path), "commit", "-b", "main", "--parent", "nosuch")
    assert result.code == 2
    assert result.err == "sapwood: error: nothing to commit: give a PATH or --tree=dir=|tar=|ref=\n"


def test_a_bad_mount_point_is_named_before_a_missing_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAPWOOD_REPO", raising=False)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    result = cli("mount", "main", not_a_dir)
    assert result.code == 2
    assert result.err == f"sapwood: error: {not_a_dir}: not a directory\n"
    result = cli("mount", "main", tmp_path)  # a good mount point: now the repository
    assert result.code == 2 and "no repository given" in result.err
