"""pull-local's hardlink path links the very inode it verified (attack23's remark): an
object file swapped for another of this user's files between the check and the link
leaves the destination with the object's true content, never the swapped-in file's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import sapwood
from store import RepoMode, Repository
from store.content import USER_META_XATTR
from store.pull import pull_local
from store.pull.local import _LocalPull
from tests.helpers import commit_files

_SIZE = 3 << 20  # three chunks of check_content: its between-chunks hook runs mid-check


def test_an_object_swapped_after_its_check_is_not_what_gets_linked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = os.urandom(_SIZE)
    with Repository.init(tmp_path / "src", RepoMode.BARE_USER) as src:
        commit_files(src, tmp_path / "tree", {"big": content}, branch="os/main")
        big = [p for p in src.path.glob("objects/*/*.file") if p.stat().st_size == _SIZE]
    assert len(big) == 1
    target = big[0]
    decoy = target.with_name("decoy")
    decoy.write_bytes(os.urandom(_SIZE))  # this user's, as the object: only content differs
    decoy.chmod(target.stat().st_mode & 0o7777)
    os.setxattr(decoy, USER_META_XATTR, os.getxattr(target, USER_META_XATTR))
    swapped: list[bool] = []
    original = _LocalPull._give_up_if_stopping

    def swap_once(self: _LocalPull) -> None:
        if not swapped and decoy.exists():
            os.rename(target, target.with_name("aside"))  # the checked inode lives on
            os.rename(decoy, target)  # the path now names another inode
            swapped.append(True)
        original(self)

    monkeypatch.setattr(_LocalPull, "_give_up_if_stopping", swap_once)
    with Repository.init(tmp_path / "dest", RepoMode.BARE_USER) as dest:
        report = pull_local(dest, tmp_path / "src", ["os/main"])
        assert swapped and report.linked >= 1
        assert sapwood.fsck(dest, all_objects=True).clean
        linked = [p for p in dest.path.glob("objects/*/*.file") if p.stat().st_size == _SIZE]
        assert [p.read_bytes() == content for p in linked] == [True]
