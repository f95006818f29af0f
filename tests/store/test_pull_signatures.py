"""pull from a remote added with sign-verify: a commit or summary that is unsigned, or
signed by no trusted key, is refused before anything of its tree is fetched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store import ObjectId, RepoMode, Repository, SignatureError
from store.pull import Remote, add_remote, pull
from store.signing import KeyPair, commit_signatures, generate_keypair, sign_commit
from store.summary import update_summary
from tests.helpers import commit_dir, write_tree
from tests.store.pull_server import Served, serve
from tests.store.test_pull_http import FAST


@pytest.fixture
def key() -> KeyPair:
    return generate_keypair()


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Repository]:
    repo = Repository.init(tmp_path / "archive", RepoMode.ARCHIVE)
    files = {f"f{n}": f"content {n}\n" for n in range(5)}
    commit_dir(repo, write_tree(tmp_path / "src", files), "main")
    yield repo
    repo.close()


@pytest.fixture
def server(archive: Repository) -> Iterator[Served]:
    with serve(archive.path) as served:
        yield served


def _local(tmp_path: Path, url: str, *keys: KeyPair) -> Repository:
    repo = Repository.init(tmp_path / "local", RepoMode.BARE_USER)
    add_remote(repo.path, Remote("origin", url, True, tuple(k.public_text for k in keys)))
    return repo


def _head(archive: Repository) -> ObjectId:
    head = archive.ref("main")
    assert head is not None
    return head


def test_a_signed_commit_and_summary_are_pulled_and_the_signatures_kept(
    tmp_path: Path, archive: Repository, server: Served, key: KeyPair
) -> None:
    sign_commit(archive, _head(archive), key)
    update_summary(archive, [key])
    local = _local(tmp_path, server.url, generate_keypair(), key)
    pull(local, "origin", settings=FAST)
    head = _head(archive)
    assert local.ref("origin:main") == head
    assert [s.key for s in commit_signatures(local, head)] == [key.public_text]


def test_an_unsigned_commit_is_refused_before_its_tree_is_fetched(
    tmp_path: Path, archive: Repository, server: Served, key: KeyPair
) -> None:
    update_summary(archive, [key])
    local = _local(tmp_path, server.url, key)
    with pytest.raises(SignatureError, match="unsigned") as refused:
        pull(local, "origin", settings=FAST)
    assert refused.value.commit_id == _head(archive)
    assert not [p for p in server.log if p.endswith((".dirtree", ".dirmeta", ".filez"))]
    assert local.refs() == {}


def test_a_commit_signed_by_an_unknown_key_is_refused(
    tmp_path: Path, archive: Repository, server: Served, key: KeyPair
) -> None:
    stranger = generate_keypair()
    sign_commit(archive, _head(archive), stranger)
    update_summary(archive, [key])
    local = _local(tmp_path, server.url, key)
    with pytest.raises(SignatureError, match="no trusted key"):
        pull(local, "origin", settings=FAST)
    assert local.refs() == {}


def test_an_unsigned_summary_is_refused(
    tmp_path: Path, archive: Repository, server: Served, key: KeyPair
) -> None:
    sign_commit(archive, _head(archive), key)
    update_summary(archive)
    local = _local(tmp_path, server.url, key)
    with pytest.raises(SignatureError, match="summary is unsigned"):
        pull(local, "origin", settings=FAST)
    assert server.log == ["/summary", "/summary.sig"]


def test_without_sign_verify_an_unsigned_commit_is_pulled(
    tmp_path: Path, archive: Repository, server: Served
) -> None:
    update_summary(archive)
    local = Repository.init(tmp_path / "local", RepoMode.BARE_USER)
    add_remote(local.path, Remote("origin", server.url))
    pull(local, "origin", settings=FAST)
    assert local.ref("origin:main") == _head(archive)
