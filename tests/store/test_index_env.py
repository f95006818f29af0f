"""Opening an index (store/index_env.py): what is refused, and how it is named."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from store import FileHeader, Repository
from store.errors import IndexDamagedError, UsageError

REG = stat.S_IFREG | 0o644


def test_an_index_open_under_another_path_is_not_called_damaged(
    user_repo: Repository, tmp_path: Path
) -> None:
    """py-lmdb refuses a second environment on one file in a process (a bind mount of
    the same repository, a copy made with hard links, whose index is the original's):
    that is how the repository was reached, not a damaged index, which the CLI would
    report as one (exit code 3: 'rebuild-index may help')."""
    with user_repo.transaction() as txn:
        txn.write_file(FileHeader(0, 0, REG), b"one file")
    copy = tmp_path / "copy"
    shutil.copytree(user_repo.path, copy, copy_function=os.link)
    with pytest.raises(UsageError, match="already open in this process") as raised:
        Repository.open(copy)
    assert not isinstance(raised.value, IndexDamagedError)
    assert "damaged" not in str(raised.value)
