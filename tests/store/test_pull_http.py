"""pull over HTTP from an archive repository served by a small threaded server:
what arrives, what is skipped, what is refused."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import sapwood
from store import CorruptObjectError, NetworkError, ObjectMissingError, RepoMode, Repository
from store.pull import FetchSettings, Remote, add_remote, pull
from store.summary import update_summary
from tests.helpers import IS_ROOT, commit_dir, read_commit_tree, write_tree
from tests.store.pull_server import Served, serve

FAST = FetchSettings(connect_timeout=2, read_timeout=2, retries=2, backoff=0.01)
LOCAL_MODES = [
    pytest.param(RepoMode.BARE_USER, id="bare-user"),
    pytest.param(
        RepoMode.BARE,
        id="bare",
        marks=pytest.mark.skipif(not IS_ROOT, reason="bare mode needs root"),
    ),
]


def _source(root: Path, version: int = 1) -> Path:
    files: dict[str, str | bytes] = {f"etc/conf{n}": f"setting {n} v{version}\n" for n in range(8)}
    files |= {f"usr/share/doc/p{n}/README": f"package {n}\n" * (n + 1) for n in range(6)}
    files["usr/bin/tool"] = os.urandom(3 << 20)  # several zstd frames
    files["usr/bin/link"] = "->tool"
    files["empty"] = ""
    return write_tree(root, files)


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Repository]:
    repo = Repository.init(tmp_path / "archive", RepoMode.ARCHIVE)
    commit_dir(repo, _source(tmp_path / "src"), "main")
    update_summary(repo)
    yield repo
    repo.close()


@pytest.fixture
def server(archive: Repository) -> Iterator[Served]:
    with serve(archive.path) as served:
        yield served


def _local(tmp_path: Path, mode: RepoMode, url: str, name: str = "origin") -> Repository:
    repo = Repository.init(tmp_path / f"local-{mode.value}", mode)
    add_remote(repo.path, Remote(name, url))
    return repo


def _objects_requested(served: Served, suffix: str) -> list[str]:
    return [path for path in served.log if path.endswith(suffix)]


@pytest.mark.parametrize("mode", LOCAL_MODES)
def test_a_pull_brings_the_whole_tree_and_moves_the_remote_ref(
    tmp_path: Path, archive: Repository, server: Served, mode: RepoMode
) -> None:
    local = _local(tmp_path, mode, server.url)
    report = pull(local, "origin", settings=FAST)
    head = archive.ref("main")
    assert head is not None
    assert local.ref("origin:main") == head
    assert report.refs == {"origin:main": (None, head)}
    assert read_commit_tree(local.path, "origin:main") == read_commit_tree(archive.path, "main")
    assert sapwood.fsck(local).clean
    assert report.content_fetched == len(_objects_requested(server, ".filez")) > 10
    # kept alive: one connection per thread that fetches (the pool's and the caller's,
    # which fetches the summary and commits), and one more after the commitmeta's 404
    # (http.server closes after an error; nginx would not)
    assert server.connections <= FAST.connections + 2 < len(server.log) / 2


def test_a_second_pull_fetches_nothing_and_an_update_only_what_changed(
    tmp_path: Path, archive: Repository, server: Served
) -> None:
    local = _local(tmp_path, RepoMode.BARE_USER, server.url)
    pull(local, "origin", ["main"], settings=FAST)
    server.clear()
    again = pull(local, "origin", ["main"], settings=FAST)
    assert again.changed == {} and again.content_fetched == 0
    assert server.log == ["/summary"]
    source = tmp_path / "src"
    (source / "etc" / "conf3").write_text("changed\n")
    commit_dir(archive, source, "main")
    update_summary(archive)
    server.clear()
    update = pull(local, "origin", settings=FAST)
    assert update.content_fetched == 1
    assert len(_objects_requested(server, ".filez")) == 1
    # the root and /etc changed; /usr was not walked
    assert len(_objects_requested(server, ".dirtree")) == 2
    assert read_commit_tree(local.path, "origin:main") == read_commit_tree(archive.path, "main")


def test_depth_pulls_parents_and_their_trees(
    tmp_path: Path, archive: Repository, server: Served
) -> None:
    first = archive.ref("main")
    source = tmp_path / "src"
    (source / "new").write_text("new\n")
    second = commit_dir(archive, source, "main")
    update_summary(archive)
    local = _local(tmp_path, RepoMode.BARE_USER, server.url)
    pull(local, "origin", depth=1, settings=FAST)
    assert local.ref("origin:main") == second
    assert first is not None and local.has_object(first)
    assert sapwood.fsck(local).clean
    shallow = _local(tmp_path / "shallow", RepoMode.BARE_USER, server.url)
    pull(shallow, "origin", settings=FAST)
    assert not shallow.has_object(first)


def test_a_dry_run_says_what_it_would_fetch_and_stores_nothing(
    tmp_path: Path, server: Served
) -> None:
    local = _local(tmp_path, RepoMode.BARE_USER, server.url)
    report = pull(local, "origin", dry_run=True, settings=FAST)
    assert report.dry_run and report.content_missing > 10
    assert _objects_requested(server, ".filez") == []
    assert local.refs() == {}
    assert not any(local.path.glob("objects/*/*.file"))


def test_a_batch_stored_before_a_failure_is_kept_and_not_fetched_again(
    tmp_path: Path, archive: Repository, server: Served
) -> None:
    local = _local(tmp_path, RepoMode.BARE_USER, server.url)
    head = archive.ref("main")
    assert head is not None
    commit = archive.read_commit(head)
    root = archive.read_dirtree(commit.tree)
    conf0 = dict(archive.read_dirtree(dict(root.dirs)[b"etc"].tree).files)[b"conf0"]
    path = "/objects/" + conf0.hex()[:2] + "/" + conf0.hex()[2:] + ".filez"
    server.fail(path, 500)
    settings = FetchSettings(
        connect_timeout=2, read_timeout=2, retries=1, backoff=0.01, batch_objects=1, connections=1
    )
    with pytest.raises(NetworkError) as failed:
        pull(local, "origin", settings=settings)
    assert failed.value.status == 500 and "after 2 attempts" in str(failed.value)
    assert local.refs() == {}
    kept = sum(1 for _ in local.path.glob("objects/*/*.file"))
    assert kept > 0
    server.fail(path, 500, times=0)
    server.clear()
    report = pull(local, "origin", settings=FAST)
    assert report.content_fetched == len(_objects_requested(server, ".filez"))
    assert len(_objects_requested(server, ".filez")) + kept == sum(
        1 for _ in local.path.glob("objects/*/*.file")
    )
    assert sapwood.fsck(local).clean


def test_a_transient_error_is_retried(tmp_path: Path, server: Served) -> None:
    local = _local(tmp_path, RepoMode.BARE_USER, server.url)
    server.fail("/summary", 503, times=2)
    pull(local, "origin", settings=FAST)
    assert server.log[:3] == ["/summary"] * 3
    assert local.ref("origin:main") is not None


def test_a_missing_object_is_named_and_not_retried(
    tmp_path: Path, archive: Repository, server: Served
) -> None:
    local = _local(tmp_path, RepoMode.BARE_USER, server.url)
    victim = next(archive.path.glob("objects/*/*.filez"))
    victim.unlink()
    with pytest.raises(ObjectMissingError) as missing:
        pull(local, "origin", settings=FAST)
    object_hex = victim.parent.name + victim.name.removesuffix(".filez")
    assert object_hex in str(missing.value)
    assert sum(1 for p in server.log if p.endswith(victim.name)) == 1
    assert local.refs() == {}


def test_wrong_bytes_are_refused_and_nothing_moves(
    tmp_path: Path, archive: Repository, server: Served
) -> None:
    local = _local(tmp_path, RepoMode.BARE_USER, server.url)
    victim = max(archive.path.glob("objects/*/*.filez"), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[-100] ^= 0xFF
    victim.chmod(0o644)
    victim.write_bytes(bytes(data))
    with pytest.raises(CorruptObjectError):
        pull(local, "origin", settings=FAST)
    assert local.refs() == {}
    assert sapwood.fsck(local, all_objects=True).clean


def test_a_tampered_dirtree_is_refused(tmp_path: Path, archive: Repository, server: Served) -> None:
    local = _local(tmp_path, RepoMode.BARE_USER, server.url)
    victim = next(archive.path.glob("objects/*/*.dirtree"))
    victim.chmod(0o644)
    victim.write_bytes(victim.read_bytes() + b"\0")
    with pytest.raises(CorruptObjectError, match="dirtree"):
        pull(local, "origin", settings=FAST)
    assert local.refs() == {}


def test_an_unknown_ref_is_refused(tmp_path: Path, server: Served) -> None:
    local = _local(tmp_path, RepoMode.BARE_USER, server.url)
    with pytest.raises(sapwood.RefNotFoundError):
        pull(local, "origin", ["nope"], settings=FAST)


def test_a_closed_port_fails_after_the_retries(tmp_path: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    local = _local(tmp_path, RepoMode.BARE_USER, f"http://127.0.0.1:{port}/")
    started = time.monotonic()
    with pytest.raises(NetworkError, match="could not connect after 3 attempts"):
        pull(local, "origin", settings=FAST)
    assert time.monotonic() - started < 2
