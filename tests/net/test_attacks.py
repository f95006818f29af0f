"""Regression tests of the security review of pull (/work/plan/attack-pull.md): each
attack that was confirmed and fixed, reproduced here so that it stays fixed."""

from __future__ import annotations

import os
import time
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


def test_a_pull_of_many_refs_is_not_quadratic(tmp_path: Path) -> None:
    """F6: a summary offering 100 000 refs made `pull REMOTE` spin for hours in the
    ref checks of its last transaction (each new ref compared with every other)."""
    tree = write_tree(tmp_path / "tree", {"a": "a\n"})
    with Repository.init(tmp_path / "repo", RepoMode.BARE_USER) as repo:
        head = commit_dir(repo, tree, "main")
        start = time.monotonic()
        with repo.transaction() as txn:
            for number in range(30_000):
                txn.set_ref(f"origin:r/{number:05d}", head, expected=None)
        assert time.monotonic() - start < 20  # 2 s here; about 100 s when quadratic
        assert len(repo.refs()) == 30_001
