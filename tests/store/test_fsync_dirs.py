"""store.durability.fsync_dirs: every directory synced (many at once), errors raised."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from store.durability import fsync_dirs


def test_every_directory_is_synced_from_several_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dirs = [tmp_path / f"d{i:02x}" for i in range(40)]
    for directory in dirs:
        directory.mkdir()
    synced: list[str] = []
    threads: set[str] = set()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        threads.add(threading.current_thread().name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    fsync_dirs(dirs)
    assert sorted(synced) == sorted(str(d) for d in dirs)
    assert len(threads) > 1  # at once, so that the journal commits them together


def test_a_failure_is_raised(tmp_path: Path) -> None:
    (tmp_path / "here").mkdir()
    with pytest.raises(FileNotFoundError):
        fsync_dirs([tmp_path / "here", tmp_path / "gone"])
    fsync_dirs([])
    fsync_dirs([tmp_path / "here"])
