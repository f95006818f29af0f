"""The commit point's flush runs in a thread while the index write checks and writes its
rows (Transaction._publish, session 15): whatever ends the write, the flush has ended
before the transaction returns, nothing is listed, and fsck is clean."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import store.transaction as transaction_module
from store import Commit, DirMeta, DirTree, FileHeader, ObjectMissingError, Repository, syncfs
from store.fsck import fsck
from store.index import Index, WriteBatch

HEADER = FileHeader(0, 0, 0o100644)


def _flushes_running() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "sapwood-flush"]


def test_a_refused_commit_point_waits_for_its_flush_and_lists_nothing(
    user_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write's check finds an object the commit names missing while the flush is
    still running (held here until the check has failed): the transaction ends with
    ObjectMissingError only once the flush has ended; the files staged are not listed."""
    checked = threading.Event()
    real_syncfs = syncfs  # store.transaction's, from store.durability
    flushed: list[Path] = []

    def slow_syncfs(path: Path) -> None:
        assert checked.wait(10)  # the check below has failed before this flush ends
        real_syncfs(path)
        flushed.append(path)

    monkeypatch.setattr(transaction_module, "syncfs", slow_syncfs)
    real_apply = Index.apply

    def apply(
        index: Index, batch: WriteBatch, before_commit: Callable[[], None] | None = None
    ) -> None:
        try:
            real_apply(index, batch, before_commit)
        finally:
            checked.set()

    monkeypatch.setattr(Index, "apply", apply)
    missing_tree = DirTree(files=((b"gone", HEADER.object_id(b"never written\n")),), dirs=())
    with pytest.raises(ObjectMissingError), user_repo.transaction() as txn:
        file_id = txn.write_file(HEADER, b"staged, never listed\n")
        tree = txn.write_dirtree(missing_tree)
        meta = txn.write_dirmeta(DirMeta(0, 0, 0o40755))
        commit = txn.write_commit(Commit(tree, meta, None, 1_700_000_000))
        txn.set_ref("main", commit)
    assert len(flushed) == 1  # ended before the transaction returned
    assert not _flushes_running()
    assert not user_repo.has_object(file_id)
    assert user_repo.refs() == {}
    assert fsck(user_repo, all_objects=True).clean
