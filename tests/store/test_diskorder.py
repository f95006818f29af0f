"""fsck and prune touch each objects/XX directory's files in inode order
(store/diskorder.py): checked against the inode numbers lstat gives."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from store import FileHeader, ObjectId, Repository
from store.diskorder import inode_numbers
from store.fsck import _in_inode_order as fsck_order
from store.prune import _in_inode_order as prune_order

REG = stat.S_IFREG | 0o644


def _objects_of_one_directory(repo: Repository) -> list[ObjectId]:
    """File objects that share an objects/XX directory, in id order (several of them)."""
    with repo.transaction() as txn:
        ids = [txn.write_file(FileHeader(0, 0, REG), b"%d" % n) for n in range(3000)]
    first = ids[0][0]
    same = sorted(i for i in ids if i[0] == first)
    assert len(same) >= 4
    return same


def _by_inode(paths: list[Path]) -> list[Path]:
    return sorted(paths, key=lambda path: os.lstat(path).st_ino)


def test_inode_numbers_names_each_entry_by_its_id_part(user_repo: Repository) -> None:
    ids = _objects_of_one_directory(user_repo)
    path = Path(user_repo.object_path(ids[0]))
    found = inode_numbers(path.parent)
    assert found[ids[0][1:].hex()] == os.lstat(path).st_ino
    assert inode_numbers(user_repo.path / "no-such-directory") == {}


def test_fsck_and_prune_hand_out_files_in_inode_order(user_repo: Repository) -> None:
    ids = _objects_of_one_directory(user_repo)
    paths = [Path(user_repo.object_path(i)) for i in ids]
    expected = _by_inode(paths)
    assert expected != paths  # else the test would show nothing
    assert prune_order(list(reversed(paths))) == expected
    (ordered,) = fsck_order(user_repo, list(ids))
    assert [Path(user_repo.object_path(i)) for i in ordered] == expected
