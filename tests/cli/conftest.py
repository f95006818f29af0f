"""Fixtures the command line's tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from store import RepoMode, Repository
from tests.helpers import commit_dir, write_tree


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    """The path of an empty bare-user repository (tmp_path/repo)."""
    path = tmp_path / "repo"
    Repository.init(path, RepoMode.BARE_USER).close()
    return path


@pytest.fixture
def two_commits(user_repo: Repository, tmp_path: Path) -> Path:
    """The path of a repository whose main^ holds /etc/x=1 and /y=1, and main changes
    both (at timestamps 1,000 and 2,000)."""
    source = write_tree(tmp_path / "src", {"etc/x": "1\n", "y": "1\n"})
    commit_dir(user_repo, source, timestamp=1_000)
    write_tree(source, {"etc/x": "2\n", "y": "2\n"})
    commit_dir(user_repo, source, timestamp=2_000)
    return user_repo.path
