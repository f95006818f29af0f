"""The link-checkout listing of objects/ saved between commits (store/inode_cache.py):
taken again only while objects/ is exactly as it was listed, never when an object was
added or removed since, nor from a file that is damaged or not the user's alone."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import store.inode_cache
from fs.checkout import CheckoutOptions, checkout
from fs.commit import CommitRequest, CommitResult, Layer, make_commit
from store import ObjectId, Repository
from tests.helpers import commit_dir

_FILES = 24


def _tree(root: Path, files: int = _FILES) -> Path:
    for number in range(files):
        folder = root / f"d{number % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{number:02}").write_bytes(b"file %d\n" % number)
    return root


def _farm(repo: Repository, tmp_path: Path, name: str, branch: str) -> Path:
    farm = tmp_path / name
    options = CheckoutOptions(user_mode=True, require_hardlinks=True, fsync=False)
    commit_id = repo.ref(branch)
    assert commit_id is not None
    checkout(repo, commit_id, farm, options)
    return farm


def _recommit(repo: Repository, farm: Path, branch: str = "farm") -> CommitResult:
    return make_commit(repo, CommitRequest(branch, [Layer.directory(farm)]))


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every listing of objects/ made from now on; directories count as settled at once
    (in a test everything was written within the last second or two)."""
    monkeypatch.setattr(store.inode_cache, "_SETTLED_NS", -(10**12))
    inodes = sys.modules["store.inodes"]
    made: list[str] = []
    real = inodes._list_objects

    def listing(objects: str, *unreadable: list[str]) -> object:
        made.append(objects)
        return real(objects, *unreadable)

    monkeypatch.setattr(inodes, "_list_objects", listing)
    return made


def _saved(repo: Repository) -> Path:
    return repo.path / "index" / store.inode_cache.FILE_NAME


def _same_tree(repo: Repository, first: str, second: str) -> bool:
    one, two = (repo.read_commit(_head(repo, branch)) for branch in (first, second))
    return (one.tree, one.meta) == (two.tree, two.meta)


def _head(repo: Repository, branch: str) -> ObjectId:
    commit_id = repo.ref(branch)
    assert commit_id is not None, branch
    return commit_id


def test_a_second_re_commit_takes_the_saved_listing(
    user_repo: Repository, tmp_path: Path, listings: list[str]
) -> None:
    commit_dir(user_repo, _tree(tmp_path / "src"))
    farm = _farm(user_repo, tmp_path, "farm", "main")
    first = _recommit(user_repo, farm)
    assert len(listings) == 1 and _saved(user_repo).is_file()
    assert os.stat(_saved(user_repo)).st_mode & 0o777 == 0o600
    second = _recommit(user_repo, farm, "again")
    assert len(listings) == 1  # not listed again
    assert first.stats.linked == second.stats.linked == _FILES
    assert second.stats.files_read == 0
    assert _same_tree(user_repo, "main", "again")


def test_an_object_added_since_makes_the_next_commit_list_again(
    user_repo: Repository, tmp_path: Path, listings: list[str]
) -> None:
    source = _tree(tmp_path / "src")
    commit_dir(user_repo, source)
    _recommit(user_repo, _farm(user_repo, tmp_path, "farm", "main"))
    assert len(listings) == 1
    (source / "d0" / "new").write_bytes(b"a file no object held before\n")
    commit_dir(user_repo, source, "grown")
    again = _recommit(user_repo, _farm(user_repo, tmp_path, "farm2", "grown"))
    assert len(listings) == 2
    assert (again.stats.linked, again.stats.files_read) == (_FILES + 1, 0)
    assert _same_tree(user_repo, "grown", "farm")


def test_a_change_while_listing_makes_the_next_commit_list_again(
    user_repo: Repository, tmp_path: Path, listings: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directories' identities are taken before the listing reads them: an entry
    added (and gone again) meanwhile leaves them changed for the next commit."""
    commit_dir(user_repo, _tree(tmp_path / "src"))
    farm = _farm(user_repo, tmp_path, "farm", "main")
    inodes = sys.modules["store.inodes"]
    spied = inodes._list_objects

    def listing_then_a_change(objects: str, *unreadable: list[str]) -> object:
        found = spied(objects, *unreadable)
        (Path(objects) / "ab" / "transient").write_bytes(b"")
        (Path(objects) / "ab" / "transient").unlink()
        return found

    monkeypatch.setattr(inodes, "_list_objects", listing_then_a_change)
    _recommit(user_repo, farm)
    monkeypatch.setattr(inodes, "_list_objects", spied)
    again = _recommit(user_repo, farm, "again")
    assert len(listings) == 2 and again.stats.linked == _FILES


@pytest.mark.parametrize("damage", ["byte", "truncated", "group-writable", "symlink"])
def test_a_saved_listing_that_is_damaged_or_not_the_users_alone_is_ignored(
    user_repo: Repository, tmp_path: Path, listings: list[str], damage: str
) -> None:
    commit_dir(user_repo, _tree(tmp_path / "src"))
    farm = _farm(user_repo, tmp_path, "farm", "main")
    _recommit(user_repo, farm)
    saved = _saved(user_repo)
    data = bytearray(saved.read_bytes())
    if damage == "byte":  # one id of the listing made another one
        data[-5] ^= 0x01
        saved.write_bytes(data)
    elif damage == "truncated":
        saved.write_bytes(data[:-40])
    elif damage == "group-writable":
        saved.chmod(0o620)
    else:
        moved = tmp_path / "elsewhere"
        saved.rename(moved)
        saved.symlink_to(moved)
    again = _recommit(user_repo, farm, "again")
    assert len(listings) == 2
    assert (again.stats.linked, again.stats.files_read) == (_FILES, 0)
    assert _same_tree(user_repo, "main", "again")


def test_a_listing_of_directories_changed_just_now_is_not_saved(
    user_repo: Repository, tmp_path: Path
) -> None:
    """Right after objects were written their directories have not settled: a change in
    the same clock tick could leave a directory's ctime as saved."""
    commit_dir(user_repo, _tree(tmp_path / "src"))
    result = _recommit(user_repo, _farm(user_repo, tmp_path, "farm", "main"))
    assert result.stats.linked == _FILES
    assert not _saved(user_repo).exists()


def test_a_saved_listing_of_another_repository_state_is_refused(
    user_repo: Repository, tmp_path: Path, listings: list[str]
) -> None:
    """Keys of other directories (another repository's, copied in) are not these."""
    commit_dir(user_repo, _tree(tmp_path / "src"))
    farm = _farm(user_repo, tmp_path, "farm", "main")
    _recommit(user_repo, farm)
    objects = str(user_repo.path / "objects")
    keys, _ = store.inode_cache.directory_keys(objects)
    assert store.inode_cache.load(str(_saved(user_repo)), keys) is not None
    other = (keys[0] + 1, keys[1])
    assert store.inode_cache.load(str(_saved(user_repo)), other) is None
