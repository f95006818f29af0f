"""A scan writes each distinct small symlink once (fs/scan.py _symlink, _keep_symlink):
symlinks alike in owner, mode, target and xattrs get the one id, and every other keeps
its own header, also once the scan's memory of them is full; a long one is never kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import fs.scan
from store import FileHeader, ObjectId, Repository, Transaction, lookup
from tests.helpers import commit_dir

_LONG = "x" * 600  # more than _SYMLINK_KEPT_BYTES: written each time
_LINKS = {  # path: (target, owner)
    "a/one": ("target", 0),
    "b/one": ("target", 0),
    "b/two": ("other", 0),
    "c/three": ("target", 4321),  # the same target, another owner: another object
    "c/four": ("target", 0),
    "d/long": (_LONG, 0),
    "d/long2": (_LONG, 0),
}


def _tree(root: Path) -> Path:
    for path, (target, owner) in _LINKS.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).symlink_to(target)
        os.lchown(root / path, owner, owner)
    return root


def _writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, int]]:
    written: list[tuple[bytes, int]] = []
    real = Transaction.write_file

    def spied(self: Transaction, header: FileHeader, data: bytes, where: str = "") -> ObjectId:
        written.append((header.symlink_target, header.uid))
        return real(self, header, data, where)

    monkeypatch.setattr(Transaction, "write_file", spied)
    return written


@pytest.mark.skipif(os.geteuid() != 0, reason="lchown to another owner needs root")
@pytest.mark.parametrize("kept", [4096, 1])
def test_each_symlink_keeps_its_own_header_each_small_one_written_once(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: int
) -> None:
    monkeypatch.setattr(fs.scan, "_SYMLINKS_KEPT", kept)
    writes = _writes(monkeypatch)
    commit_id = commit_dir(user_repo, _tree(tmp_path / "src"))
    ids = {}
    for path, (target, owner) in _LINKS.items():
        node = lookup(user_repo, commit_id, "/" + path)
        assert node.file is not None
        header, _ = user_repo.read_file_header(node.file)
        assert (header.symlink_target, header.uid, header.gid) == (target.encode(), owner, owner)
        ids[path] = node.file
    assert ids["a/one"] == ids["b/one"] == ids["c/four"] != ids["c/three"]
    long = (_LONG.encode(), 0)
    if kept == 4096:  # target (root), other, target (4321): once each; the long one twice
        assert sorted(writes) == sorted(
            [(b"target", 0), (b"other", 0), (b"target", 4321), long, long]
        )
    else:  # remembered one at a time: written again whenever the symlink differs
        # a/one, b/two, c/four (after b/two), c/three, d/long, d/long2
        again = [(b"target", 0), (b"other", 0), (b"target", 0), (b"target", 4321)]
        assert writes == [*again, long, long]
