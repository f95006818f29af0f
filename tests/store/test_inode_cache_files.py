"""The saved objects/ listing's file (store/inode_cache.py): a killed save's temporary
is removed by a later save (review16 R16-6), and a listing saved for other directories
is refused from its head, before the rest is read (R16-5)."""

from __future__ import annotations

import os
import time
import zlib
from array import array
from pathlib import Path

import pytest

import store.inode_cache as inode_cache


def _saved(tmp_path: Path) -> tuple[str, inode_cache.Keys]:
    objects = tmp_path / "objects"
    for byte in range(256):
        (objects / f"{byte:02x}").mkdir(parents=True)
    keys, _ = inode_cache.directory_keys(str(objects))
    path = str(tmp_path / "object-inodes")
    inode_cache.save(path, keys, array("Q", [5, 7]), bytes(64))
    return path, keys


def test_a_killed_saves_temporary_goes_at_the_next_save_a_fresh_one_stays(tmp_path: Path) -> None:
    stale = tmp_path / "object-inodes.tmp-1-dead"
    fresh = tmp_path / "object-inodes.tmp-2-live"
    for leftover in (stale, fresh):
        leftover.write_bytes(b"half a listing")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    path, keys = _saved(tmp_path)
    assert not stale.exists() and fresh.exists()
    assert inode_cache.load(path, keys) is not None


def test_a_listing_for_other_directories_is_refused_from_its_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, keys = _saved(tmp_path)
    loaded = inode_cache.load(path, keys)
    assert loaded is not None and list(loaded[0]) == [5, 7]
    crcs: list[int] = []
    real = zlib.crc32  # what store.inode_cache checksums with

    def counted(data: bytes) -> int:
        crcs.append(1)
        return real(data)

    monkeypatch.setattr("store.inode_cache.zlib.crc32", counted)
    device, packed = keys
    assert inode_cache.load(path, (device + 1, packed)) is None
    assert inode_cache.load(path, (device, packed[:-1] + b"\xff")) is None
    assert crcs == []  # refused by its head: the rest neither read nor checksummed
    assert inode_cache.load(path, keys) is not None and crcs == [1]


def test_a_listing_that_missed_a_directory_is_not_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """objects/7f cannot be listed (too many open files, say): its objects are read as
    usual by this commit, and the listing is not saved as if it held none, which would
    have made every later commit read them too (review16 R16-8); listed whole, it is."""
    from store.inodes import ObjectInodes
    from store.modes import RepoMode

    objects = tmp_path / "objects"
    for byte in range(256):
        (objects / f"{byte:02x}").mkdir(parents=True)
    monkeypatch.setattr(inode_cache, "_SETTLED_NS", 0)
    saved = tmp_path / "object-inodes"
    scandir = os.scandir

    def failing(path: str) -> object:
        if str(path).endswith("/7f"):
            raise OSError(24, "Too many open files")
        return scandir(path)

    monkeypatch.setattr(os, "scandir", failing)
    (objects / "00" / ("ab" * 31 + ".file")).write_bytes(b"x")
    ObjectInodes(RepoMode.BARE_USER, str(objects), str(saved))._listing()
    assert not saved.exists()
    monkeypatch.setattr(os, "scandir", scandir)
    ObjectInodes(RepoMode.BARE_USER, str(objects), str(saved))._listing()
    assert saved.exists()
