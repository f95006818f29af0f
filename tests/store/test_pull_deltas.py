"""pull with static deltas: a delta in the summary is fetched instead of the objects,
every object in it verified as a single object is; what it lacks is fetched alone."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import sapwood
from store import CorruptObjectError, ObjectId, RepoMode, Repository
from store.deltas import generate_delta
from store.pull import Remote, add_remote, pull
from store.summary import update_summary
from tests.helpers import commit_dir, read_commit_tree, write_tree
from tests.store.pull_server import Served, serve
from tests.store.test_pull_http import FAST


def _tree(root: Path) -> Path:
    files: dict[str, str | bytes] = {f"etc/conf{n}": f"setting {n}\n" for n in range(10)}
    files["usr/bin/tool"] = os.urandom(2 << 20)
    files["usr/bin/link"] = "->tool"
    return write_tree(root, files)


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Repository]:
    repo = Repository.init(tmp_path / "archive", RepoMode.ARCHIVE)
    commit_dir(repo, _tree(tmp_path / "src"), "main")
    yield repo
    repo.close()


@pytest.fixture
def server(archive: Repository) -> Iterator[Served]:
    with serve(archive.path) as served:
        yield served


def _head(repo: Repository) -> ObjectId:
    head = repo.ref("main")
    assert head is not None
    return head


def _local(tmp_path: Path, url: str) -> Repository:
    repo = Repository.init(tmp_path / "local", RepoMode.BARE_USER)
    add_remote(repo.path, Remote("origin", url))
    return repo


def _loose(served: Served) -> list[str]:
    return [p for p in served.log if p.startswith("/objects/") and not p.endswith("commitmeta")]


def test_a_delta_from_nothing_replaces_the_objects(
    tmp_path: Path, archive: Repository, server: Served
) -> None:
    head = _head(archive)
    generate_delta(archive, None, head, part_size=1 << 20)
    update_summary(archive)
    local = _local(tmp_path, server.url)
    report = pull(local, "origin", settings=FAST)
    assert report.deltas == [head.hex()]
    assert report.content_fetched == 0 and report.delta_objects > 10
    assert _loose(server) == [f"/objects/{head.hex()[:2]}/{head.hex()[2:]}.commit"]
    assert any(p.endswith("/superblock") for p in server.log)
    assert read_commit_tree(local.path, "origin:main") == read_commit_tree(archive.path, "main")
    assert sapwood.fsck(local, all_objects=True).clean


def test_an_update_uses_the_delta_from_the_commit_it_has(
    tmp_path: Path, archive: Repository, server: Served
) -> None:
    old = _head(archive)
    update_summary(archive)
    local = _local(tmp_path, server.url)
    pull(local, "origin", settings=FAST)
    source = tmp_path / "src"
    (source / "etc" / "conf1").write_text("changed\n")
    (source / "new").write_bytes(os.urandom(100_000))
    new = commit_dir(archive, source, "main")
    generate_delta(archive, old, new)
    generate_delta(archive, None, new)  # on offer too, but the update's delta is smaller
    update_summary(archive)
    server.clear()
    report = pull(local, "origin", settings=FAST)
    assert report.deltas == [f"{old.hex()}-{new.hex()}"]
    assert report.content_fetched == 0 and report.delta_objects == 2 + 2 + 1  # files, trees, commit
    assert local.ref("origin:main") == new
    assert read_commit_tree(local.path, "origin:main") == read_commit_tree(archive.path, "main")


def test_a_tampered_delta_part_is_refused_and_nothing_moves(
    tmp_path: Path, archive: Repository, server: Served
) -> None:
    head = _head(archive)
    delta = generate_delta(archive, None, head)
    update_summary(archive)
    part = delta / "0"
    good = part.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    part.chmod(0o644)
    part.write_bytes(bytes(bad))
    local = _local(tmp_path, server.url)
    with pytest.raises(CorruptObjectError):
        pull(local, "origin", settings=FAST)
    assert local.refs() == {}
    assert sapwood.fsck(local, all_objects=True).clean
    part.write_bytes(good)
    pull(local, "origin", settings=FAST)
    assert local.ref("origin:main") == head


def test_a_superblock_other_than_the_summary_names_is_refused(
    tmp_path: Path, archive: Repository, server: Served
) -> None:
    delta = generate_delta(archive, None, _head(archive))
    update_summary(archive)
    (delta / "superblock").write_bytes(b"D\x01garbage")
    local = _local(tmp_path, server.url)
    with pytest.raises(CorruptObjectError, match="not the one the summary names"):
        pull(local, "origin", settings=FAST)
    assert local.refs() == {}
