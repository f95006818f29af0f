"""Two pulls of one remote at once (attack24 1): the one whose ref another pull moved to
the very commit it brings succeeds; one whose ref moved elsewhere fails as before, in
one line, nothing changed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from store import RefConflictError, Repository, Transaction
from store.pull import pull as store_pull
from store.pull.job import _Wanted
from store.pull.pull import _Pull
from tests.helpers import write_tree
from tests.net.repos import add_remote, archive_of, fsck_clean, local_repo, pull, refs
from tests.net.servers import Nginx


def _served(tmp_path: Path, nginx: Callable[[Path], Nginx]) -> tuple[Path, Path]:
    archive = tmp_path / "served" / "repo"
    archive_of(archive, write_tree(tmp_path / "v1", {"a": "one\n"}))
    server = nginx(tmp_path / "served")
    local = local_repo(tmp_path / "local")
    add_remote(local, f"{server.url}repo/")
    assert pull(local, "origin").returncode == 0
    return archive, local


def _another_pull_first(
    monkeypatch: pytest.MonkeyPatch, local: Path, before: Callable[[], None] = lambda: None
) -> None:
    """Another pull of the same remote runs whole while this one writes its commit."""
    real = _Pull._finish

    def finish(job: _Pull, moves: list[_Wanted], txn: Transaction) -> None:
        before()
        other = pull(local, "origin")
        assert other.returncode == 0, other.stderr
        real(job, moves, txn)

    monkeypatch.setattr(_Pull, "_finish", finish)


def test_a_pull_whose_ref_another_moved_to_its_own_commit_succeeds(
    tmp_path: Path, nginx: Callable[[Path], Nginx], monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, local = _served(tmp_path, nginx)
    new = archive_of(archive, write_tree(tmp_path / "v2", {"a": "two\n", "b": "b\n"}))
    _another_pull_first(monkeypatch, local)
    with Repository.open(local) as repo:
        report = store_pull(repo, "origin")
    assert report.refs["origin:main"][1].hex() == new
    assert refs(local)["origin:main"] == new
    fsck_clean(local)


def test_a_pull_whose_ref_another_moved_elsewhere_still_fails(
    tmp_path: Path, nginx: Callable[[Path], Nginx], monkeypatch: pytest.MonkeyPatch
) -> None:
    archive, local = _served(tmp_path, nginx)
    archive_of(archive, write_tree(tmp_path / "v2", {"a": "two\n"}))
    newer: list[str] = []

    def publish_v3() -> None:
        newer.append(archive_of(archive, write_tree(tmp_path / "v3", {"a": "three\n"})))

    _another_pull_first(monkeypatch, local, publish_v3)
    with Repository.open(local) as repo, pytest.raises(RefConflictError):
        store_pull(repo, "origin")
    assert refs(local)["origin:main"] == newer[0]
    fsck_clean(local)
