"""attack8.md 13: fsck --all by a user who may read a repository but not its tmp/
cannot see whether the owner's commit runs: it said the unlisted files were prune's
leftovers; now it says they may be a running commit's."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest

from tests.helpers import IS_ROOT, cli, run_as_user, write_tree

LEFTOVER = "cd" * 31 + ".file"


@pytest.mark.skipif(not IS_ROOT, reason="needs root to run a command as another user")
def test_another_users_fsck_cannot_rule_a_writer_out(shared: Path) -> None:
    tmp_path = shared
    repo = tmp_path / "repo"
    assert cli("--repo", repo, "init").code == 0
    tree = write_tree(tmp_path / "t", {"a": "1\n"})
    assert cli("--repo", repo, "commit", "-b", "main", tree).code == 0
    (repo / "objects" / "ab").mkdir(exist_ok=True)
    (repo / "objects" / "ab" / LEFTOVER).write_bytes(b"published, not yet listed")
    (repo / "tmp").chmod(0o700)
    mine = json.loads(cli("--repo", repo, "fsck", "--all", "--json").out)
    assert (mine["orphan_files"], mine["writer_running"]) == (1, False)
    staging = repo / "tmp" / "staging-test-1"
    staging.mkdir()
    fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        theirs = run_as_user("--repo", repo, "fsck", "--all")
    finally:
        os.close(fd)
    assert theirs.returncode == 0, theirs.stderr
    assert "1 unlisted file (a commit or pull is running" in theirs.stdout
