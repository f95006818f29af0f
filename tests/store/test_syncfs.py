"""store.durability.syncfs: the C library's syncfs when the process has it, sync(2)
when it does not (a static Python, a C library without it): never no sync at all."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import pytest

import store.durability as durability


@pytest.fixture
def fresh_lookup() -> Iterator[None]:
    durability._syncfs_function.cache_clear()
    yield
    durability._syncfs_function.cache_clear()


@pytest.mark.usefixtures("fresh_lookup")
def test_syncfs_is_the_c_librarys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("store.durability.os.sync", lambda: pytest.fail("sync(2) used"))
    durability.syncfs(tmp_path)
    assert durability._syncfs_function() is not None


@pytest.mark.usefixtures("fresh_lookup")
@pytest.mark.parametrize("failure", [OSError("no dlopen"), AttributeError("no syncfs")])
def test_without_syncfs_every_filesystem_is_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    def no_syncfs(*args: object, **kwargs: object) -> object:
        raise failure

    synced: list[bool] = []
    monkeypatch.setattr(ctypes, "CDLL", no_syncfs)
    monkeypatch.setattr("store.durability.os.sync", lambda: synced.append(True))
    durability.syncfs(tmp_path)
    durability.syncfs(tmp_path)
    assert synced == [True, True]


def test_an_error_of_syncfs_is_raised(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        durability.syncfs(tmp_path / "missing")
