"""Hostile tester X10 (attack23.md, session 13) against signatures, summaries, static
deltas and pull-local. A test that passes guards a defence; a defect is a strict xfail
naming its finding in /work/plan/attack23.md.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import DowngradeError, ObjectId, RepoMode, Repository, SignatureError
from store.pull import Remote, add_remote, pull, pull_local
from store.signing import KeyPair, commit_signatures, generate_keypair, sign_commit
from store.summary import update_summary
from tests.helpers import cli, commit_files, run
from tests.store.pull_server import Served, serve
from tests.store.test_pull_http import FAST

RELEASE = 1767225600  # 2026-01-01: both commits of the same second (a fixed --timestamp)


@pytest.fixture
def key() -> KeyPair:
    return generate_keypair()


@pytest.fixture
def same_second(tmp_path: Path, key: KeyPair) -> Iterator[tuple[Repository, ObjectId, ObjectId]]:
    """An archive whose main went v1 -> v2 (v2's parent v1) within one second, both
    signed: a release and its hotfix from one build, or builds that pin the time."""
    repo = Repository.init(tmp_path / "archive", RepoMode.ARCHIVE)
    old = commit_files(repo, tmp_path / "v1", {"f": "vulnerable\n"}, timestamp=RELEASE)
    new = commit_files(repo, tmp_path / "v2", {"f": "fixed\n"}, timestamp=RELEASE)
    assert repo.read_commit(new).parent == old
    for commit_id in (old, new):
        sign_commit(repo, commit_id, key)
    yield repo, old, new
    repo.close()


@pytest.fixture
def server(same_second: tuple[Repository, ObjectId, ObjectId]) -> Iterator[Served]:
    with serve(same_second[0].path) as served:
        yield served


def _local(tmp_path: Path, url: str, key: KeyPair) -> Repository:
    repo = Repository.init(tmp_path / "local", RepoMode.BARE_USER)
    add_remote(repo.path, Remote("origin", url, True, (key.public_text,)))
    return repo


# attack23 5: the downgrade check compares timestamps only (offered >= current passes),
# so a replayed signed summary moves the ref back to the commit's own parent when both
# carry the same second.
@pytest.mark.xfail(strict=True, reason="attack23 5: a replayed parent of the same second is taken")
def test_a_replayed_parent_of_the_same_second_does_not_move_the_ref_back(
    tmp_path: Path,
    same_second: tuple[Repository, ObjectId, ObjectId],
    server: Served,
    key: KeyPair,
) -> None:
    archive, old, new = same_second
    archive.set_ref("main", new)
    update_summary(archive, [key])
    local = _local(tmp_path, server.url, key)
    pull(local, "origin", settings=FAST)
    assert local.ref("origin:main") == new
    archive.set_ref("main", old)  # the old state, genuinely signed, replayed
    update_summary(archive, [key])
    with pytest.raises(DowngradeError):
        pull(local, "origin", settings=FAST)
    assert local.ref("origin:main") == new


def test_a_newer_commit_of_the_same_second_still_moves_the_ref(
    tmp_path: Path,
    same_second: tuple[Repository, ObjectId, ObjectId],
    server: Served,
    key: KeyPair,
) -> None:
    """What the fix must keep: the child of the same second is an upgrade."""
    archive, old, new = same_second
    archive.set_ref("main", old)
    update_summary(archive, [key])
    local = _local(tmp_path, server.url, key)
    pull(local, "origin", settings=FAST)
    archive.set_ref("main", new)
    update_summary(archive, [key])
    assert pull(local, "origin", settings=FAST).changed == {"origin:main": (old, new)}


def test_a_summary_signed_by_an_untrusted_key_moves_nothing(
    tmp_path: Path,
    same_second: tuple[Repository, ObjectId, ObjectId],
    server: Served,
    key: KeyPair,
) -> None:
    archive, old, new = same_second
    archive.set_ref("main", old)
    update_summary(archive, [key])
    local = _local(tmp_path, server.url, key)
    pull(local, "origin", settings=FAST)
    archive.set_ref("main", new)
    update_summary(archive, [generate_keypair()])  # a stranger's key
    with pytest.raises(SignatureError, match="signed by no trusted key"):
        pull(local, "origin", settings=FAST)
    assert local.ref("origin:main") == old


# attack23 6: pull-local copies commits, trees and files but not the commits' detached
# signatures, which an HTTP pull keeps: a release signed in the build repository and
# moved into the published archive with pull-local is published unsigned.
@pytest.mark.xfail(strict=True, reason="attack23 6: pull-local drops the commits' signatures")
@pytest.mark.parametrize("mode", [RepoMode.ARCHIVE, RepoMode.BARE_USER])
def test_pull_local_keeps_the_commits_signatures(
    tmp_path: Path, key: KeyPair, mode: RepoMode
) -> None:
    with Repository.init(tmp_path / "build", RepoMode.BARE_USER) as build:
        commit_id = commit_files(build, tmp_path / "tree", {"f": "release\n"})
        sign_commit(build, commit_id, key)
        assert [s.key for s in commit_signatures(build, commit_id)] == [key.public_text]
    with Repository.init(tmp_path / "published", mode) as published:
        pull_local(published, tmp_path / "build", ["main"])
        assert published.ref("main") == commit_id
        signatures = commit_signatures(published, commit_id)
        data = published.read_commit(commit_id).encode()
        assert [(s.key, s.verifies(data)) for s in signatures] == [(key.public_text, True)]


def _archive_with_summary(tmp_path: Path) -> Path:
    with Repository.init(tmp_path / "archive", RepoMode.ARCHIVE) as repo:
        commit_files(repo, tmp_path / "tree", {"f": "x\n"})
        update_summary(repo)
    return tmp_path / "archive"


# attack23 9: `sapwood summary` reads REPO/summary with open(): a FIFO there (a damaged
# repository) blocks it for ever, where config, refs and objects are refused at once.
@pytest.mark.xfail(strict=True, reason="attack23 9: a FIFO summary blocks `sapwood summary`")
def test_a_summary_that_is_a_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    repo = _archive_with_summary(tmp_path)
    (repo / "summary").unlink()
    os.mkfifo(repo / "summary")
    try:
        proc = run("summary", repo=repo, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("sapwood summary blocked on a FIFO")
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1, proc.stderr


# attack23 10: `sapwood summary` says "signed" whenever summary.sig exists, whatever it
# holds: garbage, or the signature of an older summary.
@pytest.mark.xfail(strict=True, reason="attack23 10: `summary` says signed for any summary.sig")
@pytest.mark.parametrize("sig", ["garbage", "stale"])
def test_summary_says_signed_only_for_a_signature_of_this_summary(
    tmp_path: Path, key: KeyPair, sig: str
) -> None:
    repo_path = _archive_with_summary(tmp_path)
    with Repository.open(repo_path) as repo:
        if sig == "garbage":
            (repo_path / "summary.sig").write_bytes(b"garbage\n")
        else:
            update_summary(repo, [key])
            stale = (repo_path / "summary.sig").read_bytes()
            commit_files(repo, tmp_path / "tree2", {"f": "y\n"})
            update_summary(repo)  # unsigned now: the old signature copied back by hand
            (repo_path / "summary.sig").write_bytes(stale)
    out = cli("--repo", repo_path, "summary")
    assert out.code == 0, out.err
    assert out.out.splitlines()[-1] != "signed", out.out
    assert cli("--repo", repo_path, "summary", "--json").out.count('"signed": true') == 0


# attack23 13: a pull from a sign-verify remote fetches the wanted commit's .commitmeta
# again even when the commit is here (to check it), and then replaces the local
# signatures with the remote's set: a mirror's own signature on the head is gone after
# the next pull, even a pull that changes nothing.
@pytest.mark.xfail(strict=True, reason="attack23 13: a pull replaces local signatures")
def test_a_pull_keeps_the_signatures_added_here(
    tmp_path: Path,
    same_second: tuple[Repository, ObjectId, ObjectId],
    server: Served,
    key: KeyPair,
) -> None:
    archive, _, new = same_second
    archive.set_ref("main", new)
    update_summary(archive, [key])
    mirror_key = generate_keypair()
    with Repository.init(tmp_path / "mirror", RepoMode.ARCHIVE) as mirror:
        add_remote(mirror.path, Remote("origin", server.url, True, (key.public_text,)))
        pull(mirror, "origin", settings=FAST)
        sign_commit(mirror, new, mirror_key)  # the mirror vouches for it too
        assert pull(mirror, "origin", settings=FAST).changed == {}
        keys = {s.key for s in commit_signatures(mirror, new)}
        assert keys == {key.public_text, mirror_key.public_text}
