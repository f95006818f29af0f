"""pull-local and a commit's detached signatures (attack23 6, 13): the source's valid
signatures come along (the archive serving them as .commitmeta), the destination's own
are kept, and a source's broken ones are left behind without failing the pull."""

from __future__ import annotations

from pathlib import Path

from store import RepoMode, Repository
from store.pull import pull_local
from store.signing import commit_signatures, encode_signatures, generate_keypair, sign_commit
from store.transaction import commitmeta_relpath
from tests.helpers import commit_files


def test_an_archive_serves_the_signatures_pull_local_brought(tmp_path: Path) -> None:
    key = generate_keypair()
    with Repository.init(tmp_path / "build", RepoMode.BARE_USER) as build:
        commit_id = commit_files(build, tmp_path / "tree", {"f": "release\n"})
        sign_commit(build, commit_id, key)
    with Repository.init(tmp_path / "pub", RepoMode.ARCHIVE) as pub:
        pull_local(pub, tmp_path / "build", ["main"])
        served = (tmp_path / "pub" / "objects" / commitmeta_relpath(commit_id)).read_bytes()
        with pub.index.reader() as reader:
            assert served == reader.commitmeta(commit_id)
        assert [s.key for s in commit_signatures(pub, commit_id)] == [key.public_text]


def test_pull_local_adds_the_sources_signatures_to_those_held_here(tmp_path: Path) -> None:
    builder, publisher = generate_keypair(), generate_keypair()
    with Repository.init(tmp_path / "build", RepoMode.BARE_USER) as build:
        commit_id = commit_files(build, tmp_path / "tree", {"f": "release\n"})
    with Repository.init(tmp_path / "pub", RepoMode.ARCHIVE) as pub:
        pull_local(pub, tmp_path / "build", ["main"])
        sign_commit(pub, commit_id, publisher)  # the publisher's own, before the builder's
        with Repository.open(tmp_path / "build") as build:
            sign_commit(build, commit_id, builder)  # signed in the source afterwards
        pull_local(pub, tmp_path / "build", ["main"])  # the head is held: signatures only
        keys = {s.key for s in commit_signatures(pub, commit_id)}
        assert keys == {builder.public_text, publisher.public_text}


def test_a_sources_signature_of_another_commit_is_not_copied(tmp_path: Path) -> None:
    key = generate_keypair()
    with Repository.init(tmp_path / "build", RepoMode.BARE_USER) as build:
        commit_id = commit_files(build, tmp_path / "tree", {"f": "release\n"})
        forged = encode_signatures([key.sign(b"another commit")])
        with build.transaction() as txn:
            txn.set_commitmeta(commit_id, forged)
    with Repository.init(tmp_path / "pub", RepoMode.BARE_USER) as pub:
        pull_local(pub, tmp_path / "build", ["main"])
        assert pub.ref("main") == commit_id
        assert commit_signatures(pub, commit_id) == ()
