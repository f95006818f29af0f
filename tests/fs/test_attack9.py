"""Attack 9: the scan's prefetcher (fs/prefetch.py) against a hostile or hanging tree.

A cold scan is simulated as in test_scan_prefetch.py: a block counter that grows at
every look starts the threads at once."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

import fs.prefetch
from fs.options import ContentOptions
from fs.prefetch import Prefetcher
from store import Repository
from tests.helpers import commit_dir

_Path = tuple[bytes, ...]


def _cold(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = itertools.count()
    monkeypatch.setattr(fs.prefetch, "_blocks_read", lambda: next(blocks))


def _spy(
    monkeypatch: pytest.MonkeyPatch, hold: _Path | None = None
) -> tuple[list[_Path], threading.Event]:
    """The directories the prefetcher lists; listing ``hold`` waits for the event (a
    directory on a mount that hangs)."""
    listed: list[_Path] = []
    release = threading.Event()
    real = Prefetcher._list

    def spy(self: Prefetcher, path: _Path, subdirs: list[_Path]) -> None:
        listed.append(path)
        if path == hold:
            release.wait(60)
        real(self, path, subdirs)

    monkeypatch.setattr(Prefetcher, "_list", spy)
    return listed, release


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sapwood-prefetch"]


def test_a_skipped_path_is_never_listed_ahead(
    user_repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 1: the commit skips /mnt (a mount that hangs, /proc of a sysroot); the
    prefetcher listed it anyway, and everything below it."""
    source = tmp_path / "src"
    for name in ("keep", "mnt"):
        (source / name / "deeper").mkdir(parents=True)
        (source / name / "deeper" / "file").write_bytes(name.encode())
    _cold(monkeypatch)
    listed, _ = _spy(monkeypatch)
    commit_dir(user_repo, source, options=ContentOptions(skip=frozenset({b"/mnt"})))
    assert (b"keep", b"deeper") in listed  # it did run
    assert not [path for path in listed if path[:1] == (b"mnt",)]
