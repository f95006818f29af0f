"""The adapter without a kernel: no exception leaves a handler but FUSEError (issue 9).

pyfuse3 lets any other exception out of its loop, which ends the daemon and leaves a
dead mount; so every handler answers an errno instead, and logs an I/O error once.
"""

from __future__ import annotations

import errno
import logging
import stat
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyfuse3
import pytest
import trio

from mountd.fuse_ops import SapwoodOperations
from mountd.view import Attributes, TreeView
from store import CorruptObjectError, PathNotFoundError


class _HostileView:
    """A view whose every answer is a failure of some kind."""

    def lookup(self, parent: int, name: bytes) -> Attributes:
        if name == b"absent":
            raise PathNotFoundError("no entry")
        raise ValueError("a bug nobody foresaw")

    def volatile_dir(self, ino: int) -> bool:
        raise PathNotFoundError(f"inode {ino} was never shown")

    def getattr(self, ino: int) -> Attributes:
        return Attributes(ino, stat.S_IFREG | 0o644, 1, 0, 0, 2**64 - 1, 0)  # no off_t holds it

    def preparation(self, ino: int) -> None:
        return None  # nothing slow: read() fails at once

    def read(self, ino: int, offset: int, size: int) -> bytes:
        raise CorruptObjectError(f"object {ino:064x} is corrupt")

    def entries(self, ino: int, offset: int) -> Any:
        raise KeyError("damaged")
        yield  # a generator, as the view's


def _errno_of(handler: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> int:
    with pytest.raises(pyfuse3.FUSEError) as caught:
        trio.run(handler, *args)
    return caught.value.errno


def test_every_failure_is_an_errno_and_an_io_error_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    view: TreeView = _HostileView()  # type: ignore[assignment]
    ops = SapwoodOperations(view, str(tmp_path / "gone"), no_open=True)
    with caplog.at_level(logging.ERROR, logger="mountd.fuse_ops"):
        for _ in range(3):
            assert _errno_of(ops.lookup, 1, b"x", None) == errno.EIO
            assert _errno_of(ops.lookup, 1, b"absent", None) == errno.ENOENT
            assert _errno_of(ops.getattr, 2, None) == errno.EIO
            assert _errno_of(ops.read, 2, 0, 4096) == errno.EIO
            assert _errno_of(ops.statfs, None) == errno.EIO
            assert _errno_of(ops.readdir, 1, 0, None) == errno.EIO
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == len(set(messages)) == 5, messages  # once each, however often
    assert any("a bug nobody foresaw" in m for m in messages)
    assert any(f"object {2:064x} is corrupt" in m for m in messages)


def test_a_flood_of_distinct_errors_is_logged_within_a_budget(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A walk over a tree whose every object is damaged: a hundred lines, then a count."""
    from mountd import fuse_ops

    clock = [1000.0]  # the budget's clock, stopped: the walk takes no time, however slow
    monkeypatch.setattr(fuse_ops, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(fuse_ops, "_BUDGET", fuse_ops._LogBudget(burst=100, per_second=1.0))
    view: TreeView = _HostileView()  # type: ignore[assignment]
    ops = SapwoodOperations(view, str(tmp_path), no_open=True)
    with caplog.at_level(logging.ERROR, logger="mountd.fuse_ops"):
        for ino in range(10_000, 12_000):
            assert _errno_of(ops.read, ino, 0, 4096) == errno.EIO
        clock[0] += 1.0  # a second later: one more line may go out
        assert _errno_of(ops.read, 1, 0, 4096) == errno.EIO
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 102
    assert messages[-2] == "1900 more I/O errors were not logged"


class _TwoDirsView:
    """Inode 1 holds immutable commit content, inode 3 is a listing of refs."""

    def lookup(self, parent: int, name: bytes) -> Attributes:
        raise PathNotFoundError(f"{name!r}: no such entry")

    def volatile_dir(self, ino: int) -> bool:
        return ino == 3


def test_an_absent_name_of_a_commit_is_cached_by_the_kernel_but_not_of_a_listing(
    tmp_path: Path,
) -> None:
    """A negative entry (st_ino 0, a long timeout) where the answer never changes; in a
    volatile listing (refs/, commits/) ENOENT, so a ref made later is found."""
    view: TreeView = _TwoDirsView()  # type: ignore[assignment]
    ops = SapwoodOperations(view, str(tmp_path), no_open=True)
    negative = trio.run(ops.lookup, 1, b"absent", None)
    assert negative.st_ino == 0 and negative.entry_timeout > 3600
    assert _errno_of(ops.lookup, 3, b"absent", None) == errno.ENOENT
