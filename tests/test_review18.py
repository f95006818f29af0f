"""Review R18 (session 13): findings in this session's library diff, each as a test that
fails while the finding stands (strict xfail) or holds (/work/plan/review18.md)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import store.transaction as transaction_module
from store import Commit, DirMeta, DirTree, FileHeader, RepoMode, Repository
from store.durability import syncfs
from store.fsck import fsck
from store.transaction import commitmeta_relpath

HEADER = FileHeader(0, 0, 0o100644)


def test_a_rename_over_a_listed_object_never_precedes_its_content_flush(
    user_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two transactions stage the same object (file_batches.claim: "an object another
    writer adds meanwhile is only staged twice"). The first lists it, flushed. The
    second's publish must not put a copy whose content is not on disk yet at the place
    of the listed object: a power loss before its flush ends would leave the index
    listing an empty file. The power loss is simulated as the lead's test does: a file
    whose inode was not flushed yet is emptied at the flush, which then fails."""
    content = b"the same content, staged by two writers\n" * 64
    oid = HEADER.object_id(content)
    path = user_repo.content.path(oid)
    second = user_repo.transaction()
    try:
        assert second.write_file(HEADER, content) == oid  # claimed: not listed yet
        with user_repo.transaction() as first:
            assert first.write_file(HEADER, content) == oid
        assert user_repo.has_object(oid)
        durable = os.stat(path).st_ino  # flushed by the first commit's syncfs

        def power_lost_before_the_flush(where: Path) -> None:
            if os.stat(path).st_ino != durable:  # a new inode, its data still in the cache
                os.truncate(path, 0)
                raise OSError(5, "Input/output error (power lost)")
            syncfs(where)

        monkeypatch.setattr(transaction_module, "syncfs", power_lost_before_the_flush)
        with contextlib.suppress(OSError):  # the power loss, if it struck before the flush
            second.commit()
    finally:
        second.abort()
    assert user_repo.has_object(oid)  # the index still lists it ...
    assert fsck(user_repo, all_objects=True).clean  # ... so its file must be whole


_FIRST_CONTEXTS = """
import threading
from store import filez
errors = []
barrier = threading.Barrier(16)
def run():
    barrier.wait()
    try:
        filez.decompressor()
    except BaseException as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=run) for _ in range(16)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(len(errors), errors[:1])
"""


def test_threads_making_their_first_zstd_context_together_all_get_one() -> None:
    """A fresh process whose threads make their first zstd context at the same moment
    (a pull's thread pool, mountd's verifications): each gets one. Repeated: the
    window is the few ms zstandard's __init__ takes (2-6 of 16 failed in 4 of 10 runs)."""
    root = Path(__file__).resolve().parent.parent
    for _ in range(20):
        result = subprocess.run(
            [sys.executable, "-c", _FIRST_CONTEXTS],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("0 "), result.stdout


def test_served_signatures_a_power_loss_interrupted_are_the_indexed_ones(tmp_path: Path) -> None:
    """Archive mode serves a commit's signatures as objects/XX/REST.commitmeta (nginx
    reads the file, not the index). Replacing them is a rename over the served file: a
    power loss before the flush ends must leave that file whole, the old signatures or
    the new, and the same as the index's (simulated as above)."""
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    try:
        with repo.transaction() as txn:
            tree = txn.write_dirtree(DirTree())
            meta = txn.write_dirmeta(DirMeta(0, 0, 0o40755))
            commit = txn.write_commit(Commit(tree, meta, None, 1_700_000_000))
        with repo.transaction() as txn:
            txn.set_commitmeta(commit, b"the first signatures" * 32)
        served = repo.path / "objects" / commitmeta_relpath(commit)
        durable = os.stat(served).st_ino

        def power_lost_before_the_flush(where: Path) -> None:
            if os.stat(served).st_ino != durable:
                os.truncate(served, 0)
                raise OSError(5, "Input/output error (power lost)")
            syncfs(where)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(transaction_module, "syncfs", power_lost_before_the_flush)
            with contextlib.suppress(OSError), repo.transaction() as txn:
                txn.set_commitmeta(commit, b"the second signatures" * 32)
        with repo.index.reader() as reader:
            indexed = reader.commitmeta(commit)
        assert served.read_bytes() == indexed
    finally:
        repo.close()
