"""pull never moves an existing REMOTE:REF back to an older commit (a replayed old
summary, signed or not) unless downgrades are allowed; the same commit again is a no-op."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import sapwood
from store import (
    DowngradeError,
    ObjectId,
    RepoMode,
    Repository,
    SignatureError,
    SignedDowngradeError,
)
from store.pull import Remote, add_remote, pull
from store.signing import KeyPair, generate_keypair, sign_commit
from store.summary import update_summary
from tests.helpers import cli, commit_files
from tests.store.pull_server import Served, serve
from tests.store.test_pull_http import FAST

JAN_2020, JAN_2021 = 1577836800, 1609459200


@pytest.fixture
def key() -> KeyPair:
    return generate_keypair()


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[tuple[Repository, ObjectId, ObjectId]]:
    """An archive whose main went v1 (2020) -> v2 (2021), both signed."""
    repo = Repository.init(tmp_path / "archive", RepoMode.ARCHIVE)
    old = commit_files(repo, tmp_path / "v1", {"f": "release 1\n"}, timestamp=JAN_2020)
    new = commit_files(repo, tmp_path / "v2", {"f": "release 2\n"}, timestamp=JAN_2021)
    yield repo, old, new
    repo.close()


@pytest.fixture
def server(archive: tuple[Repository, ObjectId, ObjectId]) -> Iterator[Served]:
    with serve(archive[0].path) as served:
        yield served


def _publish(archive: Repository, head: ObjectId, keys: list[KeyPair] | None = None) -> None:
    archive.set_ref("main", head)
    update_summary(archive, keys or [])


def _local(tmp_path: Path, url: str, key: KeyPair | None = None) -> Repository:
    repo = Repository.init(tmp_path / "local", RepoMode.BARE_USER)
    keys = () if key is None else (key.public_text,)
    add_remote(repo.path, Remote("origin", url, key is not None, keys))
    return repo


def test_a_replayed_older_commit_does_not_move_the_ref(
    tmp_path: Path, archive: tuple[Repository, ObjectId, ObjectId], server: Served
) -> None:
    repo, old, new = archive
    _publish(repo, new)
    local = _local(tmp_path, server.url)
    pull(local, "origin", settings=FAST)
    _publish(repo, old)  # what a man in the middle replays
    server.clear()
    for dry_run in (True, False):
        with pytest.raises(
            DowngradeError, match=r"back from commit .* nothing was pulled"
        ) as refused:
            pull(local, "origin", dry_run=dry_run, settings=FAST)
        assert not isinstance(refused.value, SignatureError)  # nothing signed here
        error = refused.value
        assert (error.ref, error.current, error.offered) == ("origin:main", new, old)
        assert (error.current_time, error.offered_time) == (JAN_2021, JAN_2020)
    assert "2021-01-01 00:00:00 UTC" in str(error) and "2020-01-01" in str(error)
    assert local.ref("origin:main") == new
    assert not [p for p in server.log if p.endswith((".dirtree", ".dirmeta", ".filez"))]
    assert sapwood.fsck(local, all_objects=True).clean


def test_allow_downgrade_moves_the_ref_back(
    tmp_path: Path, archive: tuple[Repository, ObjectId, ObjectId], server: Served
) -> None:
    repo, old, new = archive
    _publish(repo, new)
    local = _local(tmp_path, server.url)
    pull(local, "origin", settings=FAST)
    _publish(repo, old)
    report = pull(local, "origin", settings=FAST, allow_downgrade=True)
    assert report.changed == {"origin:main": (new, old)}
    assert local.ref("origin:main") == old
    assert sapwood.fsck(local, all_objects=True).clean


def test_the_same_commit_again_is_a_no_op_and_a_newer_one_moves_the_ref(
    tmp_path: Path, archive: tuple[Repository, ObjectId, ObjectId], server: Served
) -> None:
    repo, old, new = archive
    _publish(repo, old)
    local = _local(tmp_path, server.url)
    pull(local, "origin", settings=FAST)
    assert pull(local, "origin", settings=FAST).changed == {}
    _publish(repo, new)
    assert pull(local, "origin", settings=FAST).changed == {"origin:main": (old, new)}


def test_a_replayed_signed_state_is_a_signature_error(
    tmp_path: Path,
    archive: tuple[Repository, ObjectId, ObjectId],
    server: Served,
    key: KeyPair,
) -> None:
    repo, old, new = archive
    for commit_id in (old, new):
        sign_commit(repo, commit_id, key)
    _publish(repo, new, [key])
    local = _local(tmp_path, server.url, key)
    pull(local, "origin", settings=FAST)
    _publish(repo, old, [key])  # the old summary, genuinely signed
    with pytest.raises(SignedDowngradeError) as refused:
        pull(local, "origin", settings=FAST)
    assert isinstance(refused.value, SignatureError) and refused.value.commit_id == old
    assert local.ref("origin:main") == new


@pytest.mark.parametrize("signed", [False, True], ids=["plain", "sign-verify"])
def test_the_command_line_refuses_in_one_line_unless_allow_downgrade(
    tmp_path: Path,
    archive: tuple[Repository, ObjectId, ObjectId],
    server: Served,
    key: KeyPair,
    signed: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAPWOOD_HTTP_TIMEOUT", "2")
    monkeypatch.setenv("SAPWOOD_HTTP_RETRIES", "1")
    repo, old, new = archive
    keys = [key] if signed else []
    for commit_id in (old, new):
        sign_commit(repo, commit_id, key)
    _publish(repo, new, keys)
    local = _local(tmp_path, server.url, key if signed else None)
    local.close()
    assert cli("--repo", local.path, "pull", "origin", "main").code == 0
    _publish(repo, old, keys)
    refused = cli("--repo", local.path, "pull", "origin", "main")
    assert refused.code == (5 if signed else 1)
    assert refused.out == ""
    assert refused.err.count("\n") == 1 and "--allow-downgrade" in refused.err
    assert f"origin:main back from commit {new.hex()[:12]}" in refused.err
    rollback = cli("--repo", local.path, "pull", "--allow-downgrade", "origin", "main")
    assert rollback.code == 0, rollback.err
    with Repository.open(local.path) as reopened:
        assert reopened.ref("origin:main") == old
