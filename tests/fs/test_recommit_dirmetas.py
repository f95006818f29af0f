"""A scan writes each distinct dirmeta once (fs/scan.py _dirmeta): the directories that
share an owner, mode and xattrs get the one id, and every other keeps its own, also
once the scan's memory of them is full."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import fs.scan
from store import DirMeta, ObjectId, Repository, Transaction, lookup
from tests.helpers import commit_dir

_MODES = {"a": 0o755, "a/b": 0o700, "c": 0o755, "c/d": 0o750, "c/d/e": 0o700, "f": 0o755}


def _tree(root: Path) -> Path:
    for path in _MODES:
        (root / path).mkdir(parents=True)
    for path, mode in _MODES.items():
        os.chmod(root / path, mode)
        (root / path / "file").write_bytes(path.encode())
    os.chmod(root, 0o755)
    return root


def _writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    modes: list[int] = []
    real = Transaction.write_dirmeta

    def spied(self: Transaction, meta: DirMeta, where: str = "") -> ObjectId:
        modes.append(stat.S_IMODE(meta.mode))
        return real(self, meta, where)

    monkeypatch.setattr(Transaction, "write_dirmeta", spied)
    return modes


@pytest.mark.parametrize("kept", [256, 1])
def test_each_directory_keeps_its_own_dirmeta_each_written_once(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: int
) -> None:
    monkeypatch.setattr(fs.scan, "_DIRMETAS_KEPT", kept)
    writes = _writes(monkeypatch)
    commit_id = commit_dir(user_repo, _tree(tmp_path / "src"))
    for path, mode in {"": 0o755, **_MODES}.items():
        node = lookup(user_repo, commit_id, "/" + path)
        assert node.dir is not None
        assert user_repo.read_dirmeta(node.dir.meta).mode == stat.S_IFDIR | mode, path
    scanned = writes[1:]  # the first: the commit's default dirmeta (fs/commit.py)
    if kept == 256:  # 0755 (root, a, c, f), 0700 (a/b, c/d/e), 0750 (c/d): once each
        assert sorted(scanned) == [0o700, 0o750, 0o755]
    else:  # remembered one at a time: written again whenever the mode changes
        assert scanned == [0o755, 0o700, 0o755, 0o750, 0o700, 0o755]
