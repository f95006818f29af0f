"""The fixed costs of a small pull (docs/decisions.md, "Pull's storage path and fixed
costs, session 9", and "The update pull, session 13"): a batch's content and names
are made durable by one syncfs after they are linked into objects/, not a syncfs
before renames and an fsync of each directory after, and still before the index lists
anything (a failure there commits nothing and leaves fsck clean); a pull loads the delta code
only when it applies a delta."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import store.durability as durability
import store.transaction as transaction_module
from store import FileHeader, ObjectId, Repository
from store.fsck import fsck
from store.index import Index, WriteBatch
from tests.helpers import write_tree
from tests.net.repos import add_remote, archive_of, fsck_clean, local_repo, pull, sapwood_ok
from tests.net.servers import Nginx

HEADER = FileHeader(0, 0, 0o100644)


def _contents(directories: int) -> list[bytes]:
    """Contents whose objects fall into at least ``directories`` object directories."""
    found: dict[str, bytes] = {}
    count = 0
    while len(found) < directories:
        content = b"file %d\n" % count
        found.setdefault(HEADER.object_id(content).hex()[:2], content)
        count += 1
    return list(found.values())


class _Calls:
    """The syncs and index writes of a commit, with what objects/ held and the index
    listed at each. The flush runs in a thread of its own while the index write checks
    and writes its rows (session 15): "synced" and "listed" are logged as the flush
    ends and as the write commits."""

    def __init__(self, repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
        self.repo = repo
        self.ids: list[ObjectId] = []
        self.log: list[tuple[str, int]] = []  # (call, object files present then)
        real_syncfs = durability.syncfs  # store.transaction's
        real_fsync_dirs = durability.fsync_dirs
        real_apply = Index.apply

        def syncfs(path: Path) -> None:
            self.log.append(("syncfs", self._present()))
            real_syncfs(path)
            self.log.append(("synced", self._listed()))

        def fsync_dirs(paths: list[Path]) -> None:
            self.log.append(("fsync_dirs", len(paths)))
            real_fsync_dirs(paths)

        def apply(
            index: Index, batch: WriteBatch, before_commit: Callable[[], None] | None = None
        ) -> None:
            self.log.append(("apply", self._present()))

            def then_commit() -> None:
                if before_commit is not None:
                    before_commit()
                self.log.append(("commit", self._listed()))

            real_apply(index, batch, then_commit)
            self.log.append(("listed", self._listed()))

        monkeypatch.setattr(transaction_module, "syncfs", syncfs)
        monkeypatch.setattr(transaction_module, "fsync_dirs", fsync_dirs)
        monkeypatch.setattr(Index, "apply", apply)

    def _listed(self) -> int:
        return sum(self.repo.has_object(oid) for oid in self.ids)

    def _present(self) -> int:
        return sum(os.path.exists(self.repo.content.path(oid)) for oid in self.ids)

    def commit(self, contents: list[bytes], before: Callable[[], None] = lambda: None) -> None:
        with self.repo.transaction() as txn:
            self.ids = [txn.write_file(HEADER, content) for content in contents]
            before()

    def check_order(self, files: int) -> None:
        """One flush, started once the files are linked in and ended before the index
        write commits; that write began meanwhile (either may log first)."""
        log = self.log
        expected = [("syncfs", files), ("apply", files), ("synced", 0), ("commit", 0)]
        assert sorted(log[:-1]) == sorted(expected), log
        assert log.index(("syncfs", files)) < log.index(("synced", 0)) < log.index(("commit", 0))
        assert log[-1] == ("listed", files)


def test_a_batch_is_linked_in_then_synced_once_before_the_index_lists_it(
    user_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _Calls(user_repo, monkeypatch)
    contents = _contents(40)
    calls.commit(contents)
    calls.check_order(len(contents))
    assert all(user_repo.has_object(oid) for oid in calls.ids)
    assert fsck(user_repo, all_objects=True).clean


def test_a_batch_into_few_directories_is_synced_once_too(
    user_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _Calls(user_repo, monkeypatch)
    contents = _contents(3)
    calls.commit(contents)
    calls.check_order(3)


def test_an_object_file_a_crash_left_empty_and_unlisted_is_trusted_by_nobody(
    user_repo: Repository,
) -> None:
    """What a crash between the renames and the end of their flush can leave: an object
    file at its place whose content never reached the disk (here: empty), which the
    index does not list. Nothing takes it for the object; fsck counts it as unlisted
    (prune removes it) and is clean; the next write of the object replaces it."""
    content = b"written, renamed, never flushed\n"
    oid = HEADER.object_id(content)
    path = user_repo.content.path(oid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    assert not user_repo.has_object(oid)
    report = fsck(user_repo, all_objects=True)
    assert report.clean and report.orphan_files == 1
    with user_repo.transaction() as txn:
        assert txn.write_file(HEADER, content) == oid
    assert user_repo.has_object(oid)
    assert fsck(user_repo, all_objects=True).clean
    assert fsck(user_repo, all_objects=True).orphan_files == 0


def test_a_failed_sync_of_the_renames_commits_nothing(
    user_repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The syncfs after the renames fails (EIO, as a crash there would stop it): the
    index lists none of the objects, no ref moves, and fsck is clean; a later commit
    stores them."""
    calls = _Calls(user_repo, monkeypatch)
    contents = _contents(40)
    real = durability.syncfs  # store.transaction's
    seen: list[Path] = []

    def failing(path: Path) -> None:
        seen.append(path)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(transaction_module, "syncfs", failing)
    with pytest.raises(OSError, match="Input/output"), user_repo.transaction() as txn:
        calls.ids = [txn.write_file(HEADER, content) for content in contents]
    assert len(seen) == 1
    assert not any(user_repo.has_object(oid) for oid in calls.ids)
    assert fsck(user_repo).clean
    monkeypatch.setattr(transaction_module, "syncfs", real)
    with user_repo.transaction() as txn:
        assert [txn.write_file(HEADER, content) for content in contents] == calls.ids
    assert all(user_repo.has_object(oid) for oid in calls.ids)
    assert fsck(user_repo, all_objects=True).clean


def _imported(stderr: str) -> set[str]:
    """The modules ``-X importtime`` (PYTHONPROFILEIMPORTTIME) reported as imported."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def _pulled_from(
    served: Path, tmp_path: Path, nginx: Callable[[Path], Nginx]
) -> tuple[Path, set[str]]:
    """A new local repository that pulled ``served``/repo over nginx; the modules the
    pull imported."""
    server = nginx(served)
    local = local_repo(tmp_path / "local")
    add_remote(local, f"{server.url}repo/")
    result = pull(local, "origin", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr
    return local, _imported(result.stderr)


def test_a_pull_without_a_delta_never_imports_the_delta_code(
    tmp_path: Path, nginx: Callable[[Path], Nginx]
) -> None:
    """store.deltas (and store.reachability below it) is loaded by a pull that applies a
    delta only: it was imported by every pull through store.pull.formats (~2 ms)."""
    served = tmp_path / "served"
    archive_of(served / "repo", write_tree(tmp_path / "tree", {"a": "one\n", "d/b": "two\n"}))
    local, imported = _pulled_from(served, tmp_path, nginx)
    assert {"store.pull.pull", "store.pull.formats", "store.summary"} <= imported
    assert "store.deltas" not in imported and "store.reachability" not in imported
    assert "base64" not in imported  # for a remote's trusted keys only (session 11)
    assert "tempfile" not in imported  # nor random below it: store.durability's (session 12)
    # session 13: shutil (argparse's width, the staging directory's removal), platform
    # (zstandard's __init__), the idna codec (getaddrinfo of a str host)
    assert "zstandard" in imported
    assert not {"shutil", "bz2", "lzma", "platform", "encodings.idna"} & imported
    assert "nacl" not in imported and "store.signing" not in imported  # unsigned: no PyNaCl
    fsck_clean(local)


def test_a_pull_that_applies_a_delta_never_imports_the_generating_code(
    tmp_path: Path, nginx: Callable[[Path], Nginx]
) -> None:
    """store.deltas decodes and generates; generating needs shutil (with bz2 and lzma)
    and store.reachability (dataclasses, with inspect and ast): ~24 M instructions of
    an update pull with a delta (~330 M), imported where a delta is generated only
    (session 14)."""
    served = tmp_path / "served"
    tree = write_tree(tmp_path / "tree", {"a": "one\n", "d/b": "two\n"})
    commit = archive_of(served / "repo", tree)
    sapwood_ok(served / "repo", "static-delta", "generate", "--to", commit)
    sapwood_ok(served / "repo", "summary", "-u")
    local, imported = _pulled_from(served, tmp_path, nginx)
    assert "store.deltas" in imported  # the delta was applied
    generating = {"shutil", "bz2", "lzma", "dataclasses", "inspect", "store.reachability"}
    assert not generating & imported
    fsck_clean(local)


_LIST_DATACLASSES = """
import dataclasses, sys
for name in sys.argv[1:]:
    __import__(name)
for name, module in sorted(sys.modules.items()):
    if name.split(".")[0] not in ("store", "sapwood"):
        continue
    for value in list(vars(module).values()):
        if isinstance(value, type) and value.__module__ == name and dataclasses.is_dataclass(value):
            print(f"{name}.{value.__qualname__}")
"""


def test_a_pull_builds_no_dataclass_of_its_own(
    tmp_path: Path, nginx: Callable[[Path], Nginx]
) -> None:
    """The classes a pull's modules define are plain ones on store.record's bases: each
    @dataclass compiled its methods at import, ~1 ms of CPU a class (19 of them, a
    quarter of an update pull's instructions with dataclasses' own imports; session 12).
    The modules a pull imports (-X importtime), imported again: none of their classes
    is a dataclass, nor is dataclasses itself imported."""
    served = tmp_path / "served"
    archive_of(served / "repo", write_tree(tmp_path / "tree", {"a": "one\n"}))
    server = nginx(served)
    local = local_repo(tmp_path / "local")
    add_remote(local, f"{server.url}repo/")
    result = pull(local, "origin", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr
    ours = sorted(n for n in _imported(result.stderr) if n.split(".")[0] in ("store", "sapwood"))
    assert "dataclasses" not in _imported(result.stderr)
    assert "store.pull.pull" in ours and "store.pull.settings" in ours
    listed = subprocess.run(
        [sys.executable, "-c", _LIST_DATACLASSES, *ours],
        capture_output=True,
        text=True,
        check=True,
    )
    assert listed.stdout == ""
