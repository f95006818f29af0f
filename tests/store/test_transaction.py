"""Transactions: nothing is visible before the commit point, nothing is left after abort."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from store import Commit, DirMeta, DirTree, FileHeader, RepoMode, Repository

REG = stat.S_IFREG | 0o644


def _object_files(repo: Repository) -> set[str]:
    return {
        p.relative_to(repo.path).as_posix()
        for p in (repo.path / "objects").rglob("*")
        if p.is_file()
    }


def test_aborted_transaction_leaves_nothing(user_repo: Repository) -> None:
    with pytest.raises(RuntimeError), user_repo.transaction() as txn:
        file_id = txn.write_file(FileHeader(0, 0, REG), b"data")
        raise RuntimeError("boom")
    assert not user_repo.has_object(file_id)
    assert _object_files(user_repo) == set()
    assert list((user_repo.path / "tmp").iterdir()) == []


def test_objects_are_invisible_until_commit(user_repo: Repository) -> None:
    txn = user_repo.transaction()
    file_id = txn.write_file(FileHeader(0, 0, REG), b"data")
    assert not user_repo.has_object(file_id)
    txn.commit()
    assert user_repo.has_object(file_id)
    assert user_repo.read_file(file_id) == b"data"


def test_identical_content_is_stored_once(user_repo: Repository) -> None:
    with user_repo.transaction() as txn:
        a = txn.write_file(FileHeader(0, 0, REG), b"same")
        b = txn.write_file(FileHeader(0, 0, REG), b"same")
    with user_repo.transaction() as txn:
        c = txn.write_file(FileHeader(0, 0, REG), b"same")
    assert a == b == c
    assert len(_object_files(user_repo)) == 1


def test_large_files_stream_through_two_passes(user_repo: Repository) -> None:
    chunks = [os.urandom(1 << 20) for _ in range(3)]
    with user_repo.transaction() as txn:
        big = txn.write_file_chunks(FileHeader(0, 0, REG), lambda: iter(chunks))
    assert user_repo.read_file(big) == b"".join(chunks)
    assert big == FileHeader(0, 0, REG).object_id(b"".join(chunks))


def test_changing_source_between_passes_is_refused(user_repo: Repository) -> None:
    versions = iter([[b"first"], [b"second"]])
    from store import SourceError

    with pytest.raises(SourceError, match="changed"), user_repo.transaction() as txn:
        txn.write_file_chunks(FileHeader(0, 0, REG), lambda: next(versions), "/x")


def test_abandoned_staging_is_cleaned_by_the_next_transaction(user_repo: Repository) -> None:
    leftover = user_repo.path / "tmp" / "staging-deadbeef-000000000000"
    leftover.mkdir()
    (leftover / "half-written").write_bytes(b"x")
    with user_repo.transaction():
        pass
    assert not leftover.exists()


def test_archive_mode_writes_servable_metadata_and_ref_files(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    with repo.transaction() as txn:
        meta = txn.write_dirmeta(DirMeta(0, 0, stat.S_IFDIR | 0o755))
        tree = txn.write_dirtree(DirTree())
        commit = txn.write_commit(Commit(tree, meta, None, 0))
        txn.set_ref("os/stable", commit)
    hexid = commit.hex()
    assert (repo.path / "objects" / hexid[:2] / f"{hexid[2:]}.commit").is_file()
    assert (repo.path / "refs" / "heads" / "os" / "stable").read_text().strip() == hexid
    with repo.transaction() as txn:
        txn.set_ref("os/stable", None)
    assert not (repo.path / "refs" / "heads" / "os" / "stable").exists()
