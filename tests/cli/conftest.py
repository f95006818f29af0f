"""Fixtures the command line's tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from store import RepoMode, Repository


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    """The path of an empty bare-user repository (tmp_path/repo)."""
    path = tmp_path / "repo"
    Repository.init(path, RepoMode.BARE_USER).close()
    return path
