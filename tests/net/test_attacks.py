"""Regression tests of the security review of pull (/work/plan/attack-pull.md): each
attack that was confirmed and fixed, reproduced here so that it stays fixed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from store import RepoMode, Repository
from store.pull import pull_local
from tests.helpers import IS_ROOT, NOBODY, commit_dir, write_tree


@pytest.mark.skipif(not IS_ROOT, reason="root pulling from another user's repository")
def test_root_pull_local_never_adopts_another_users_object_files(tmp_path: Path) -> None:
    """F3: a hardlinked object stays the other user's inode, which they could rewrite
    afterwards under root's repository and every checkout of it; it must be copied."""
    tree = write_tree(tmp_path / "tree", {"bin/tool": "#!/bin/sh\necho genuine\n"})
    with Repository.init(tmp_path / "user-repo", RepoMode.BARE_USER) as src:
        head = commit_dir(src, tree, "os")
    for path in (tmp_path / "user-repo").rglob("*"):  # as the user's own repository is
        os.lchown(path, NOBODY, NOBODY)
    with Repository.init(tmp_path / "root-repo", RepoMode.BARE_USER) as dest:
        pull_local(dest, tmp_path / "user-repo", ["os"])
        assert dest.ref("os") == head
    objects = list((tmp_path / "root-repo").glob("objects/*/*.file"))
    assert objects
    for path in objects:
        assert path.stat().st_uid == 0, f"{path} is owned by uid {path.stat().st_uid}"
        assert path.stat().st_nlink == 1
