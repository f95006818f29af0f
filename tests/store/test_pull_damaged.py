"""pull and pull-local into a repository that fsck --delete damaged: a dirtree it still
holds no longer stands for its whole subtree, so what is missing below it is fetched
again, and no commit loses its partial mark while objects it needs are missing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import sapwood
from store import ObjectId, RepoMode, Repository
from store.pull import Remote, add_remote, pull, pull_local
from store.summary import update_summary
from tests.helpers import cat_bytes, commit_files
from tests.store.pull_server import Served, serve
from tests.store.test_pull_http import FAST

V1 = {"a/shared": "shared\n", "a/deep/er": "deeper\n", "b/x": "x\n"}
V2 = {"a/shared": "shared\n", "a/deep/er": "deeper\n", "b/y": "y\n"}  # a/ unchanged


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Repository]:
    repo = Repository.init(tmp_path / "archive", RepoMode.ARCHIVE)
    commit_files(repo, tmp_path / "v1", V1)
    update_summary(repo)
    yield repo
    repo.close()


@pytest.fixture
def server(archive: Repository) -> Iterator[Served]:
    with serve(archive.path) as served:
        yield served


def _rot_and_delete(repo: Repository, *contents: bytes) -> None:
    """Bit rot in the object files holding ``contents``, then fsck --delete."""
    for path in repo.path.glob("objects/*/*.file"):
        if path.read_bytes() in contents:
            path.chmod(0o644)
            path.write_bytes(path.read_bytes().upper())
    report = sapwood.fsck(repo, delete=True)
    assert report.partial and not report.clean


def _damaged_local(tmp_path: Path, url: str) -> tuple[Repository, ObjectId]:
    local = Repository.init(tmp_path / "local", RepoMode.BARE_USER)
    add_remote(local.path, Remote("origin", url))
    pull(local, "origin", settings=FAST)
    head = local.ref("origin:main")
    assert head is not None
    _rot_and_delete(local, b"shared\n", b"deeper\n")
    assert local.is_partial(head)
    return local, head


def test_a_pull_sharing_a_held_dirtree_fetches_what_fsck_deleted_below_it(
    tmp_path: Path, archive: Repository, server: Served
) -> None:
    local, old = _damaged_local(tmp_path, server.url)
    new = commit_files(archive, tmp_path / "v2", V2)
    update_summary(archive)
    report = pull(local, "origin", settings=FAST)
    assert report.changed == {"origin:main": (old, new)}
    assert report.content_fetched == 3  # b/y, and the two that fsck deleted
    assert sapwood.fsck(local, all_objects=True).clean  # v1 is complete again too
    assert cat_bytes(local.path, "origin:main", "/a/deep/er") == b"deeper\n"
    assert cat_bytes(local.path, "origin:main", "/a/shared") == b"shared\n"


def test_pulling_a_partial_commit_again_repairs_it(
    tmp_path: Path, archive: Repository, server: Served
) -> None:
    local, head = _damaged_local(tmp_path, server.url)
    report = pull(local, "origin", settings=FAST)
    assert report.changed == {} and report.content_fetched == 2
    assert not local.is_partial(head)
    assert sapwood.fsck(local, all_objects=True).clean
    assert cat_bytes(local.path, "origin:main", "/a/shared") == b"shared\n"


def test_a_dry_run_into_a_damaged_repository_counts_what_fsck_deleted(
    tmp_path: Path, archive: Repository, server: Served
) -> None:
    local, head = _damaged_local(tmp_path, server.url)
    assert pull(local, "origin", dry_run=True, settings=FAST).content_missing == 2
    assert local.is_partial(head)


def test_pull_local_into_a_damaged_repository_copies_what_fsck_deleted(
    tmp_path: Path, archive: Repository
) -> None:
    local = Repository.init(tmp_path / "local", RepoMode.BARE_USER)
    pull_local(local, archive.path, ["main"])
    head = local.ref("main")
    assert head is not None
    _rot_and_delete(local, b"shared\n")
    new = commit_files(archive, tmp_path / "v2", V2)
    report = pull_local(local, archive.path, ["main"])
    assert report.changed == {"main": (head, new)}
    assert report.content_fetched == 2  # b/y and a/shared
    assert sapwood.fsck(local, all_objects=True).clean
    assert cat_bytes(local.path, "main", "/a/shared") == b"shared\n"


def test_pull_local_of_the_partial_commit_again_repairs_it(
    tmp_path: Path, archive: Repository
) -> None:
    local = Repository.init(tmp_path / "local", RepoMode.BARE_USER)
    pull_local(local, archive.path, ["main"])
    head = local.ref("main")
    assert head is not None
    _rot_and_delete(local, b"deeper\n")
    assert pull_local(local, archive.path, ["main"]).content_fetched == 1
    assert not local.is_partial(head)
    assert sapwood.fsck(local, all_objects=True).clean
