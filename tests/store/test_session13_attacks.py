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

import sapwood
from store import DowngradeError, ObjectId, ObjectType, RepoMode, Repository, SignatureError
from store.deltas import (
    DeltaEntry,
    Superblock,
    decode_superblock,
    generate_delta,
    iter_delta_objects,
)
from store.pull import Remote, add_remote, pull, pull_local
from store.signing import KeyPair, commit_signatures, generate_keypair, sign_commit
from store.summary import update_summary
from tests.helpers import cli, commit_files, read_commit_tree, run
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


# ----- crafted static deltas (defences that hold) -----------------------------------
def _delta_objects(delta: Path) -> list[tuple[ObjectId, ObjectType, bytes]]:
    superblock = decode_superblock((delta / "superblock").read_bytes())
    return list(iter_delta_objects(superblock, lambda i: (delta / str(i)).read_bytes()))


def _write_delta(
    delta: Path,
    from_id: ObjectId | None,
    to_id: ObjectId,
    objects: list[tuple[ObjectId, ObjectType, bytes]],
) -> None:
    """Replace the delta at ``delta`` with one part holding ``objects`` as listed."""
    for old in delta.iterdir():
        old.unlink()
    entries, offset = [], 0
    for object_id, kind, payload in objects:
        entries.append(DeltaEntry(object_id, kind, 0, offset, len(payload)))
        offset += len(payload)
    sizes = (offset,) if objects else ()
    if objects:
        (delta / "0").write_bytes(b"".join(payload for _, _, payload in objects))
    (delta / "superblock").write_bytes(Superblock(from_id, to_id, sizes, tuple(entries)).encode())


@pytest.fixture
def delta_archive(tmp_path: Path) -> Iterator[tuple[Repository, ObjectId, Served]]:
    repo = Repository.init(tmp_path / "archive", RepoMode.ARCHIVE)
    files: dict[str, str | bytes] = {f"etc/conf{n}": f"setting {n}\n" for n in range(8)}
    files["usr/bin/tool"] = b"\x7fELF" + bytes(range(256)) * 64
    head = commit_files(repo, tmp_path / "src", files)
    with serve(repo.path) as served:
        yield repo, head, served
    repo.close()


def test_a_delta_that_omits_objects_and_adds_strangers_still_pulls_the_whole_tree(
    tmp_path: Path, delta_archive: tuple[Repository, ObjectId, Served]
) -> None:
    archive, head, served = delta_archive
    delta = generate_delta(archive, None, head)
    objects = _delta_objects(delta)
    with Repository.init(tmp_path / "other", RepoMode.ARCHIVE) as other:
        stranger_id = commit_files(other, tmp_path / "stranger", {"s": "a stranger\n"})
        stranger = [o for o in _delta_objects(generate_delta(other, None, stranger_id))]
    files = [o for o in objects if o[1] is ObjectType.FILE]
    assert len(files) > 2
    _write_delta(delta, None, head, [files[0], *[o for o in stranger if o[1] is ObjectType.FILE]])
    update_summary(archive)
    local = Repository.init(tmp_path / "local", RepoMode.BARE_USER)
    add_remote(local.path, Remote("origin", served.url))
    report = pull(local, "origin", settings=FAST)
    assert report.deltas and local.ref("origin:main") == head
    assert read_commit_tree(local.path, head.hex()) == read_commit_tree(archive.path, head.hex())
    assert sapwood.fsck(local, all_objects=True).clean


@pytest.mark.parametrize("forgery", ["kind", "payload"])
def test_a_delta_object_under_another_kind_or_with_another_payload_moves_nothing(
    tmp_path: Path, delta_archive: tuple[Repository, ObjectId, Served], forgery: str
) -> None:
    archive, head, served = delta_archive
    delta = generate_delta(archive, None, head)
    objects = _delta_objects(delta)
    words = {"kind": "not a valid|dirmeta|decode", "payload": "blake3 differs"}
    trees = [i for i, o in enumerate(objects) if o[1] is ObjectType.DIRTREE]
    first, second = trees[0], trees[1]
    object_id, kind, payload = objects[first]
    if forgery == "kind":  # a dirtree sent as a dirmeta
        objects[first] = (object_id, ObjectType.DIRMETA, payload)
    else:  # another (valid) dirtree's bytes under this one's id
        objects[first] = (object_id, kind, objects[second][2])
    _write_delta(delta, None, head, objects)
    update_summary(archive)
    local = Repository.init(tmp_path / "local", RepoMode.BARE_USER)
    add_remote(local.path, Remote("origin", served.url))
    with pytest.raises(sapwood.CorruptObjectError, match=words[forgery]):
        pull(local, "origin", settings=FAST)
    assert local.refs() == {}
    assert sapwood.fsck(local, all_objects=True).clean


def test_a_prune_between_pull_locals_content_and_its_commit_moves_no_ref(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pull-local stores content in transactions of its own before the one that writes
    the commit and moves the ref; a prune in between (a timer's) deletes that content,
    unreferenced yet. The last transaction must then refuse, not record a commit whose
    files are gone."""
    from store.pull import local as local_module

    with Repository.init(tmp_path / "src", RepoMode.BARE_USER) as src:
        head = commit_files(src, tmp_path / "tree", {f"f{n}": f"file {n}\n" for n in range(50)})
    copy = local_module._LocalPull._copy_content
    pruned = []

    def copy_then_prune(self: local_module._LocalPull) -> None:
        copy(self)
        with Repository.open(tmp_path / "dest") as other:
            pruned.append(sapwood.prune(other).objects)

    monkeypatch.setattr(local_module._LocalPull, "_copy_content", copy_then_prune)
    with Repository.init(tmp_path / "dest", RepoMode.ARCHIVE) as dest:
        with pytest.raises(sapwood.ObjectMissingError, match="removed while the commit ran"):
            pull_local(dest, tmp_path / "src", ["main"])
        assert pruned == [50]  # the window was hit: the content had been stored, then went
        assert dest.refs() == {} and not dest.has_object(head)
        assert sapwood.fsck(dest, all_objects=True).clean
        monkeypatch.undo()
        pull_local(dest, tmp_path / "src", ["main"])  # the next try completes
        assert dest.ref("main") == head and sapwood.fsck(dest, all_objects=True).clean


@pytest.mark.parametrize("mode", [RepoMode.BARE_USER, RepoMode.ARCHIVE])
def test_a_source_object_replaced_by_a_symlink_is_neither_linked_nor_read_through(
    tmp_path: Path, mode: RepoMode
) -> None:
    """A hostile source repository: one object file is a symlink to a file of the same
    content elsewhere (another user's, which could change it afterwards). pull-local
    into a repository of the same mode would hardlink it (the symlink's owner is the
    puller): it must refuse instead, and a copy must not read through it."""
    with Repository.init(tmp_path / "src", RepoMode.BARE_USER) as src:
        head = commit_files(src, tmp_path / "tree", {"f": "payload\n"})
        node = sapwood.lookup(src, head, "/f")
        assert node.file is not None
        path = Path(src.object_path(node.file))
    elsewhere = tmp_path / "elsewhere"
    os.link(path, elsewhere)  # the same inode: content, xattr and mode all right
    path.unlink()
    path.symlink_to(elsewhere)
    with Repository.init(tmp_path / "dest", mode) as dest:
        with pytest.raises(sapwood.CorruptObjectError):
            pull_local(dest, tmp_path / "src", ["main"])
        assert dest.refs() == {}
        assert sapwood.fsck(dest, all_objects=True).clean
        assert not any(p.is_symlink() for p in (dest.path / "objects").rglob("*"))


def test_another_commits_signatures_served_beside_a_commit_move_nothing(
    tmp_path: Path,
    same_second: tuple[Repository, ObjectId, ObjectId],
    server: Served,
    key: KeyPair,
) -> None:
    """The archive's .commitmeta of the new commit replaced by the old one's (genuine
    signatures by the trusted key, of other bytes): refused before any tree is fetched."""
    archive, old, new = same_second
    archive.set_ref("main", new)
    update_summary(archive, [key])

    def meta(commit_id: ObjectId) -> Path:
        return archive.path / "objects" / commit_id.hex()[:2] / f"{commit_id.hex()[2:]}.commitmeta"

    meta(new).write_bytes(meta(old).read_bytes())
    local = _local(tmp_path, server.url, key)
    server.clear()
    with pytest.raises(SignatureError, match="signed by no trusted key"):
        pull(local, "origin", settings=FAST)
    assert local.refs() == {}
    assert not [p for p in server.log if p.endswith((".dirtree", ".dirmeta", ".filez"))]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_pull_local_never_hardlinks_another_users_object_files(tmp_path: Path) -> None:
    """Objects of the same mode on one filesystem are hardlinked, but not one owned by
    another user (even for root: its owner could rewrite the inode afterwards)."""
    with Repository.init(tmp_path / "src", RepoMode.BARE_USER) as src:
        head = commit_files(src, tmp_path / "tree", {"mine": "mine\n", "theirs": "theirs\n"})
        theirs = sapwood.lookup(src, head, "/theirs").file
        mine = sapwood.lookup(src, head, "/mine").file
        assert theirs is not None and mine is not None
        theirs_path, mine_path = src.object_path(theirs), src.object_path(mine)
    os.chown(theirs_path, 65534, 65534)
    with Repository.init(tmp_path / "dest", RepoMode.BARE_USER) as dest:
        report = pull_local(dest, tmp_path / "src", ["main"])
        assert report.linked == 1
        assert os.path.samefile(dest.object_path(mine), mine_path)
        assert not os.path.samefile(dest.object_path(theirs), theirs_path)
        assert os.stat(dest.object_path(theirs)).st_uid == 0
        assert sapwood.fsck(dest, all_objects=True).clean
