"""An archive repository whose index is lost gets it back from its object files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from store import IndexDamagedError, ObjectId, RepoMode, Repository, UsageError, fsck, lookup
from store.rebuild import rebuild_index
from tests.helpers import build_rich_tree, commit_dir, read_commit_tree


def _archive_with_history(tmp_path: Path) -> tuple[Path, dict[str, ObjectId]]:
    """os/main: two commits (the first also as ref first); origin:os/stable: one."""
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    source = tmp_path / "src"
    build_rich_tree(source)
    first = commit_dir(repo, source, "os/main")
    with repo.transaction() as txn:
        txn.set_ref("first", first)
    (source / "etc" / "passwd").write_text("changed\n")
    commit_dir(repo, source, "os/main")
    commit_dir(repo, source, "origin:os/stable")
    refs = repo.refs()
    repo.close()
    return repo.path, refs


def test_rebuild_gives_back_refs_history_and_content(tmp_path: Path) -> None:
    path, refs = _archive_with_history(tmp_path)
    before = read_commit_tree(path, "os/main")
    shutil.rmtree(path / "index")
    with pytest.raises(IndexDamagedError):
        Repository.open(path)
    report = rebuild_index(path)
    assert report.skipped == [] and report.partial == [] and report.old_index is None
    with Repository.open(path) as repo:
        assert repo.refs() == refs
        assert fsck(repo, all_objects=True).clean
        assert repo.read_commit(refs["os/main"]).parent == refs["first"]
        assert repo.read_commit(refs["first"]).parent is None
    assert read_commit_tree(path, "os/main") == before


def test_rebuild_leaves_out_corrupt_objects_and_marks_their_commits(tmp_path: Path) -> None:
    path, refs = _archive_with_history(tmp_path)
    with Repository.open(path) as repo:
        passwd = lookup(repo, refs["os/main"], "/etc/passwd").file
        assert passwd is not None
        victim = repo.content.path(passwd)
    data = bytearray(victim.read_bytes())
    data[-3] ^= 0xFF
    victim.write_bytes(bytes(data))
    (path / "index" / "data.mdb").write_bytes(b"")  # an empty index: damaged
    report = rebuild_index(path)
    assert [line[:64] for line in report.skipped] == [passwd.hex()]
    assert refs["os/main"] in report.partial
    assert report.old_index is not None and report.old_index.is_dir()
    with Repository.open(path) as repo:
        assert not repo.has_object(passwd)
        assert repo.is_partial(refs["os/main"])


def test_only_archive_repositories_can_be_rebuilt(tmp_path: Path) -> None:
    Repository.init(tmp_path / "repo", RepoMode.BARE_USER).close()
    with pytest.raises(UsageError, match="index only"):
        rebuild_index(tmp_path / "repo")
