"""Large transactions publish their file objects in bounded batches (store/transaction.py).

SAPWOOD_FLUSH_AT makes the batches small, so that trees of a few dozen files flush
several times: the commit must still be atomic for refs and trees, an abort or a
SIGKILL must leave fsck clean, and prune must remove what an unfinished transaction
published.
"""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fs.commit import CommitRequest, Layer, make_commit
from store import Commit, DirMeta, DirTree, FileHeader, ObjectId, ObjectMissingError, Repository
from store.fsck import fsck
from store.prune import prune
from tests.helpers import run, sapwood_argv

REG = stat.S_IFREG | 0o644
LONG = bool(os.environ.get("SAPWOOD_LONG"))


@pytest.fixture
def small_flushes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAPWOOD_FLUSH_AT", "8")


def _tree(root: Path, dirs: int, files: int) -> Path:
    for d in range(dirs):
        sub = root / f"d{d}" / "inner"
        sub.mkdir(parents=True)
        for f in range(files):
            (sub / f"f{f}").write_bytes(b"%d %d\n" % (d, f))
    return root


@pytest.mark.usefixtures("small_flushes")
def test_flushed_objects_are_published_before_the_commit_point(user_repo: Repository) -> None:
    with user_repo.transaction() as txn:
        ids = [txn.write_file(FileHeader(0, 0, REG), b"file %d" % n) for n in range(20)]
        assert txn.flushes == 2  # 16 of 20 published, in two batches of 8
        assert sum(user_repo.has_object(i) for i in ids) == 16
        again = txn.write_file(FileHeader(0, 0, REG), b"file 3")  # flushed: not staged twice
        assert again == ids[3]
    assert all(user_repo.has_object(i) for i in ids)
    assert [user_repo.read_file(i) for i in ids[:2]] == [b"file 0", b"file 1"]


@pytest.mark.usefixtures("small_flushes")
def test_a_commit_of_many_flushes_is_whole_and_checks_clean(
    user_repo: Repository, tmp_path: Path
) -> None:
    source = _tree(tmp_path / "src", dirs=6, files=9)
    time.sleep(1.1)  # past the stat cache's margin for racily clean files
    result = make_commit(user_repo, CommitRequest("main", [Layer.directory(source)]))
    report = fsck(user_repo)
    assert report.clean and report.file_objects == 54
    assert user_repo.ref("main") == result.commit_id
    again = make_commit(user_repo, CommitRequest("main", [Layer.directory(source)]))
    assert (
        user_repo.read_commit(again.commit_id).tree == user_repo.read_commit(result.commit_id).tree
    )
    assert again.stats.cache_hits == 54  # the stat cache rows were published with them


@pytest.mark.usefixtures("small_flushes")
def test_an_aborted_transaction_leaves_only_what_prune_removes(user_repo: Repository) -> None:
    with pytest.raises(RuntimeError), user_repo.transaction() as txn:
        ids = [txn.write_file(FileHeader(0, 0, REG), b"%d" % n) for n in range(12)]
        raise RuntimeError("boom")
    assert sum(user_repo.has_object(i) for i in ids) == 8  # one batch was published
    assert list((user_repo.path / "tmp").iterdir()) == []
    assert fsck(user_repo, all_objects=True).clean
    assert prune(user_repo).objects == 8
    assert not any(user_repo.has_object(i) for i in ids)
    assert not any(p.is_file() for p in (user_repo.path / "objects").rglob("*"))


@pytest.mark.usefixtures("small_flushes")
def test_a_new_tree_naming_a_missing_file_is_refused(user_repo: Repository) -> None:
    """A file nobody wrote: the message must not blame prune alone (review7 17)."""
    never_written = "is not in the repository: never written, or removed while"
    with pytest.raises(ObjectMissingError, match=never_written), user_repo.transaction() as txn:
        for n in range(10):
            txn.write_file(FileHeader(0, 0, REG), b"%d" % n)
        meta = txn.write_dirmeta(DirMeta(0, 0, stat.S_IFDIR | 0o755))
        tree = txn.write_dirtree(DirTree(files=((b"gone", ObjectId(bytes(32))),)))
        txn.set_ref("main", txn.write_commit(Commit(tree, meta, None, 0)))
    assert user_repo.ref("main") is None


@pytest.mark.usefixtures("small_flushes")
def test_threads_writing_the_same_objects_across_flushes(user_repo: Repository) -> None:
    found: list[list[ObjectId]] = []
    with user_repo.transaction() as txn:

        def writer(seed: int) -> None:
            order = list(range(60))
            random.Random(seed).shuffle(order)
            found.append([txn.write_file(FileHeader(0, 0, REG), b"%d" % n) for n in order])

        threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert txn.flushes >= 1
    ids = {object_id for ids in found for object_id in ids}
    assert len(ids) == 60 and all(user_repo.has_object(i) for i in ids)
    files = [p for p in (user_repo.path / "objects").rglob("*") if p.is_file()]
    assert len(files) == 60
    assert fsck(user_repo, all_objects=True).clean


def test_sigkill_during_a_flushing_commit_leaves_a_clean_repository(tmp_path: Path) -> None:
    seed = int(os.environ.get("SAPWOOD_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)  # a failure names it: SAPWOOD_SEED=N replays the kill times
    repo = tmp_path / "repo"
    run("init", repo=repo, text=True, check=True)
    source = _tree(tmp_path / "src", dirs=20, files=100)
    env = {**os.environ, "SAPWOOD_FLUSH_AT": "64"}
    commit = sapwood_argv("commit", "-b", "main", source, repo=repo)
    started = time.perf_counter()
    subprocess.run(commit, check=True, stdout=subprocess.DEVNULL, env=env)
    span = time.perf_counter() - started
    for n in range(20 if LONG else 3):
        for d in range(20):  # every tree new, every file read again
            (source / f"d{d}" / "inner" / "f0").write_bytes(b"round %d\n" % n)
            os.utime(source / f"d{d}" / "inner", ns=(0, 0))
        for path in source.rglob("f*"):
            os.utime(path, ns=(n + 1, n + 1))
        proc = subprocess.Popen(commit, stdout=subprocess.DEVNULL, env=env)
        time.sleep(rng.uniform(span * 0.2, span * 1.1))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        checked = run("fsck", "--all", repo=repo, text=True)
        assert checked.returncode == 0, f"SAPWOOD_SEED={seed}: {checked.stdout}{checked.stderr}"
    run("commit", "-b", "main", source, repo=repo, text=True, check=True)
    run("prune", repo=repo, text=True, check=True)
    checked = run("fsck", "--all", repo=repo, text=True)
    assert checked.returncode == 0, f"SAPWOOD_SEED={seed}: {checked.stdout}{checked.stderr}"


@pytest.mark.parametrize("chosen", ["x", "-3", "0", "²"])
def test_a_flush_size_that_is_not_a_positive_number_is_ignored(
    user_repo: Repository, monkeypatch: pytest.MonkeyPatch, chosen: str
) -> None:
    """SAPWOOD_FLUSH_AT=x was a ValueError in every transaction, and -3 flushed at
    every write, empty batches and all."""
    monkeypatch.setenv("SAPWOOD_FLUSH_AT", chosen)
    with user_repo.transaction() as txn:
        ids = [txn.write_file(FileHeader(0, 0, REG), b"%d" % n) for n in range(20)]
        assert txn.flushes == 0  # the default, 16,384, is far off
    assert all(user_repo.has_object(i) for i in ids)
