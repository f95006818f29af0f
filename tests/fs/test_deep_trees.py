"""Trees nested as deep as sapwood allows work everywhere; deeper ones are refused.

Python's recursion limit (1000 frames) is below what a legal directory tree can
reach, so every reader of trees must either be iterative or stay within
MAX_TREE_DEPTH: a traceback is not an answer.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fs.commit import CommitRequest, Layer, LayerKind, make_commit
from store import Repository, SourceError
from store.mtree import MAX_TREE_DEPTH
from tests.helpers import cli, nest_dirs


@pytest.fixture
def deep_tmp(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, emptied with rm -rf afterwards: pytest's own clean-up recurses."""
    yield tmp_path
    for child in tmp_path.iterdir():
        subprocess.run(["rm", "-rf", str(child)], check=True)


def _deep_dir(root: Path, depth: int) -> Path:
    """A chain of ``depth`` directories below ``root`` with a file at the bottom."""
    root.mkdir()
    nest_dirs(root, depth, "d", bottom=("bottom", 0o644))
    return root


def test_the_deepest_allowed_tree_commits_lists_diffs_and_checks_out(
    user_repo: Repository, deep_tmp: Path
) -> None:
    tmp_path = deep_tmp
    depth = MAX_TREE_DEPTH
    source = _deep_dir(tmp_path / "src", depth)
    first = make_commit(user_repo, CommitRequest("deep", [Layer(LayerKind.DIR, str(source))]))
    path = "/" + "/".join(["d"] * depth) + "/bottom"
    assert cli("--repo", user_repo.path, "cat", "deep", path).out == "deep\n"
    listing = cli("--repo", user_repo.path, "ls", "-R", "deep")
    assert listing.code == 0 and listing.out.count("\n") == depth + 2, listing.err
    empty = tmp_path / "empty"
    empty.mkdir()
    second = make_commit(user_repo, CommitRequest("deep", [Layer(LayerKind.DIR, str(empty))]))
    diff = cli("--repo", user_repo.path, "diff", first.commit_id.hex(), second.commit_id.hex())
    assert diff.code == 0 and diff.out.splitlines() == ["D    /d"], diff.err
    out = tmp_path / "out"
    checkout = cli("--repo", user_repo.path, "checkout", "-U", first.commit_id.hex(), out)
    assert checkout.code == 0, checkout.err
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        assert os.stat("bottom", dir_fd=fd).st_size == 5
    finally:
        os.close(fd)
    against = cli("--repo", user_repo.path, "diff", first.commit_id.hex(), out)
    assert against.code == 0 and against.out == "", against.err


def test_a_tar_nested_deeper_than_allowed_is_refused(user_repo: Repository, tmp_path: Path) -> None:
    archive = tmp_path / "deep.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("/".join(["d"] * (MAX_TREE_DEPTH + 1)) + "/f")  # one too deep
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(SourceError, match="more than"):
        make_commit(user_repo, CommitRequest("deep", [Layer(LayerKind.TAR, str(archive))]))
    result = cli("--repo", user_repo.path, "commit", "-b", "deep", f"--tree=tar={archive}")
    assert result.code != 0 and len(result.err.strip().splitlines()) == 1, result.err
    assert user_repo.refs() == {}
