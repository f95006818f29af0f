"""A Ctrl-C while a transaction publishes (store/interrupts.py, attack11.md 1 and 2).

The SIGINT is real (os.kill of this process) and lands where attack11's trials saw it
land: after the staged files were renamed into objects/ and before the index listed
them, and inside _finish's rmtree. It must neither leave unlisted object files nor
keep the repository's lock, and the KeyboardInterrupt still comes out."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import store.transaction as transaction_module
from store import FileHeader, ObjectId, Repository
from store.index import Index
from store.interrupts import interrupts_held

REG = stat.S_IFREG | 0o644

pytestmark = pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
    reason="needs Python's own SIGINT handler",
)


def _interrupting(real: Callable[..., Any]) -> Callable[..., Any]:
    """``real``, after a SIGINT to this process: Python raises KeyboardInterrupt at
    the next bytecode, before ``real`` runs, unless the handler is held back."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    return wrapper


def _lock_is_free(repo: Repository) -> bool:
    fd = os.open(repo.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _id_of(path: Path) -> ObjectId:
    return ObjectId(bytes.fromhex(path.parent.name + path.name.removesuffix(".file")))


def _write(repo: Repository, count: int) -> list[ObjectId]:
    with repo.transaction() as txn:
        return [txn.write_file(FileHeader(0, 0, REG), b"file %d" % n) for n in range(count)]


def test_an_interrupt_before_the_index_lists_the_renamed_files_waits_for_it(
    user_repo: Repository, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ids: list[ObjectId] = []
    monkeypatch.setattr(Index, "apply", _interrupting(Index.apply))
    # The KeyboardInterrupt still comes out, once the commit is whole.
    with pytest.raises(KeyboardInterrupt), user_repo.transaction() as txn:
        ids += [txn.write_file(FileHeader(0, 0, REG), b"file %d" % n) for n in range(5)]
    monkeypatch.undo()
    assert all(user_repo.has_object(i) for i in ids)  # none left unlisted in objects/
    assert list((user_repo.path / "tmp").glob("staging-*")) == []
    assert _lock_is_free(user_repo)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert "interrupted after the commit point" in caplog.text  # not taken for undone


def test_an_interrupt_at_a_flush_waits_for_its_listing(
    user_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAPWOOD_FLUSH_AT", "4")
    monkeypatch.setattr(Index, "apply", _interrupting(Index.apply))
    with pytest.raises(KeyboardInterrupt):  # at the first flush, once it is listed
        _write(user_repo, 6)
    monkeypatch.undo()
    published = [p for p in (user_repo.path / "objects").glob("*/*.file")]
    assert len(published) == 4
    assert all(user_repo.has_object(_id_of(p)) for p in published)  # nothing unlisted
    assert _lock_is_free(user_repo)


def test_an_interrupt_inside_the_staging_removal_after_the_commit_point(
    user_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the staging directory is removed by rmdirs once emptied (session 13), rmtree else
    monkeypatch.setattr(
        transaction_module, "_remove_staging", _interrupting(transaction_module._remove_staging)
    )
    ids: list[ObjectId] = []
    with pytest.raises(KeyboardInterrupt), user_repo.transaction() as txn:
        ids += [txn.write_file(FileHeader(0, 0, REG), b"file %d" % n) for n in range(3)]
    monkeypatch.undo()
    assert all(user_repo.has_object(i) for i in ids)
    assert list((user_repo.path / "tmp").glob("staging-*")) == []
    assert _lock_is_free(user_repo)  # a later exclusive lock in this process would wait


def test_an_interrupt_inside_an_abort_lets_go_of_the_lock(
    user_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    txn = user_repo.transaction()
    txn.write_file(FileHeader(0, 0, REG), b"aborted")
    monkeypatch.setattr(shutil, "rmtree", _interrupting(shutil.rmtree))
    with pytest.raises(KeyboardInterrupt):
        txn.abort()  # not held back: it may be long; the next transaction removes it
    monkeypatch.undo()
    assert _lock_is_free(user_repo)
    with pytest.raises(OSError):
        os.fstat(txn._staging_fd)  # closed (nothing opened since in this test)


def test_held_interrupts_go_to_the_handler_that_was_there() -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        with interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass  # the handler runs here, and holds it
            assert seen == []
        assert seen == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)
