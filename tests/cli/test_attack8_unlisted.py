"""attack8.md 6: a directory under objects/XX/ named like an object is no object file:
prune counted it as an unlisted file, then failed on it ('Is a directory') after it had
begun deleting, and every prune after failed the same way."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import cli, write_tree

LEFTOVER = "cd" * 31 + ".file"


def test_a_directory_in_objects_is_left_alone(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert cli("--repo", repo, "init").code == 0
    for version in ("1", "2"):
        tree = write_tree(tmp_path / f"t{version}", {"a": f"{version}\n"})
        assert cli("--repo", repo, "commit", "-b", "main", "--timestamp", version, tree).code == 0
    odd = repo / "objects" / "ab" / "cdef"
    odd.mkdir(parents=True)
    (odd / "inside").write_text("not an object\n")
    (repo / "objects" / "ab" / LEFTOVER).write_bytes(b"leftover")
    checked = json.loads(cli("--repo", repo, "fsck", "--all", "--json").out)
    assert checked["orphan_files"] == 1
    pruned = cli("--repo", repo, "prune", "--refs-only", "--depth", "0", "--json")
    assert pruned.code == 0, pruned.err
    report = json.loads(pruned.out)
    assert report["orphan_files"] == 1 and len(report["deleted_commits"]) == 1
    assert (odd / "inside").is_file() and not (repo / "objects" / "ab" / LEFTOVER).exists()
    assert cli("--repo", repo, "fsck").code == 0
    assert cli("--repo", repo, "cat", "main", "/a").out == "2\n"
