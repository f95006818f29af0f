"""ed25519 signatures: key files, detached commit signatures, verification."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from store import CorruptObjectError, FormatError, ObjectType, RepoMode, Repository
from store.errors import KeyFileError, ObjectMissingError
from store.ids import ObjectId
from store.signing import (
    Signature,
    commit_signatures,
    decode_signatures,
    encode_signatures,
    generate_keypair,
    parse_public_key,
    read_keys_file,
    sign_commit,
    verify_signed,
    write_keys_file,
)
from store.transaction import commitmeta_relpath
from tests.helpers import commit_files


def _repo(tmp_path: Path, mode: RepoMode = RepoMode.ARCHIVE) -> tuple[Repository, ObjectId]:
    repo = Repository.init(tmp_path / "repo", mode)
    return repo, commit_files(repo, tmp_path / "src", {"a": "hello\n"})


def test_keys_file_round_trips_with_mode_0600(tmp_path: Path) -> None:
    pair = generate_keypair()
    path = tmp_path / "key"
    write_keys_file(path, pair)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_keys_file(path) == [pair]
    assert len(parse_public_key(pair.public_text)) == 32
    with pytest.raises(KeyFileError, match="never overwritten"):
        write_keys_file(path, generate_keypair())
    assert read_keys_file(path) == [pair]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "no such keys file"),
        ("", "holds no key"),
        ("not base64!\n", "not an ed25519 secret key"),
        ("PUBLIC", "a public key"),
        ("DAMAGED", "halves disagree"),
        (b"\xff\xfe", "not text"),
    ],
)
def test_bad_keys_files_are_refused(
    tmp_path: Path, content: str | bytes | None, match: str
) -> None:
    path = tmp_path / "keys"
    pair = generate_keypair()
    if content == "PUBLIC":
        content = pair.public_text + "\n"
    elif content == "DAMAGED":
        from store.signing import key_text

        content = key_text(pair.secret[:32] + generate_keypair().public) + "\n"
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(KeyFileError, match=match) as caught:
        read_keys_file(path)
    assert caught.value.path == path


def test_a_directory_or_unreadable_file_is_not_a_keys_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not a regular file"):
        read_keys_file(tmp_path)
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        write_keys_file(locked, generate_keypair())
        locked.chmod(0)
        with pytest.raises(KeyFileError, match="cannot be read"):
            read_keys_file(locked)


def test_verify_signed_trusts_only_trusted_keys() -> None:
    alice, bob = generate_keypair(), generate_keypair()
    data = b"some bytes"
    signatures = encode_signatures([alice.sign(data)])
    assert verify_signed(data, signatures, [alice.public_text]) == alice.public_text
    assert verify_signed(data, signatures, [bob.public_text]) is None
    assert verify_signed(b"other bytes", signatures, [alice.public_text]) is None
    forged = Signature(alice.public, bob.sign(data).signature)
    assert verify_signed(data, [forged], [alice.public_text]) is None
    with pytest.raises(FormatError):
        verify_signed(data, b"garbage", [alice.public_text])


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[:-1],
        lambda b: b + b"\0",
        lambda b: b"X" + b[1:],
        lambda b: b[:5] + b"\xff\xff\xff\xff" + b[9:],
    ],
)
def test_signature_sets_refuse_garbage(mangle: Callable[[bytes], bytes]) -> None:
    good = encode_signatures([generate_keypair().sign(b"x") for _ in range(2)])
    assert len(decode_signatures(good)) == 2
    with pytest.raises(FormatError):
        decode_signatures(mangle(good))


def test_unsorted_signature_sets_are_not_canonical() -> None:
    sigs = sorted((generate_keypair().sign(b"x") for _ in range(2)), key=lambda s: s.public_key)
    raw = encode_signatures(sigs)
    swapped = raw[:6] + raw[6 + 96 :] + raw[6 : 6 + 96]
    with pytest.raises(FormatError, match="sorted"):
        decode_signatures(swapped)


@pytest.mark.parametrize("mode", [RepoMode.ARCHIVE, RepoMode.BARE_USER])
def test_sign_commit_adds_detached_signatures(tmp_path: Path, mode: RepoMode) -> None:
    repo, commit_id = _repo(tmp_path, mode)
    alice, bob = generate_keypair(), generate_keypair()
    assert commit_signatures(repo, commit_id) == ()
    assert sign_commit(repo, commit_id, alice) is True
    assert sign_commit(repo, commit_id, alice) is False  # idempotent
    assert sign_commit(repo, commit_id, bob) is True
    signatures = commit_signatures(repo, commit_id)
    assert {s.key for s in signatures} == {alice.public_text, bob.public_text}
    data = repo.read_commit(commit_id).encode()
    assert all(s.verifies(data) for s in signatures)
    served = repo.path / "objects" / commitmeta_relpath(commit_id)
    if mode is RepoMode.ARCHIVE:
        assert decode_signatures(served.read_bytes()) == signatures
        assert verify_signed(data, served.read_bytes(), [bob.public_text]) == bob.public_text
    else:
        assert not served.exists()


def test_signing_a_missing_commit_changes_nothing(tmp_path: Path) -> None:
    repo, commit_id = _repo(tmp_path)
    tree = repo.read_commit(commit_id).tree
    with pytest.raises(ObjectMissingError):
        sign_commit(repo, ObjectId(bytes(32)), generate_keypair())
    with pytest.raises(CorruptObjectError):  # a dirtree is not a commit
        sign_commit(repo, tree, generate_keypair())
    assert not list((repo.path / "objects").glob("*/*.commitmeta"))
    assert repo.object_path(tree, ObjectType.DIRTREE)


def test_rebuild_index_keeps_signatures(tmp_path: Path) -> None:
    from store.rebuild import rebuild_index

    repo, commit_id = _repo(tmp_path)
    key = generate_keypair()
    sign_commit(repo, commit_id, key)
    repo.close()
    report = rebuild_index(tmp_path / "repo")
    assert not any("commitmeta" in line for line in report.skipped)
    with Repository.open(tmp_path / "repo") as again:
        assert [s.key for s in commit_signatures(again, commit_id)] == [key.public_text]


def test_prune_removes_a_deleted_commits_signatures(tmp_path: Path) -> None:
    from store.prune import prune

    repo, first = _repo(tmp_path)
    sign_commit(repo, first, generate_keypair())
    served = repo.path / "objects" / commitmeta_relpath(first)
    assert served.exists()
    commit_files(repo, tmp_path / "src2", {"b": "other\n"}, parent=None)
    prune(repo, refs_only=True, depth=0)
    assert not repo.has_object(first) and not served.exists()
    assert commit_signatures(repo, first) == ()


def test_concurrent_signers_each_land_their_signature(tmp_path: Path) -> None:
    import threading

    repo, commit_id = _repo(tmp_path)
    keys = [generate_keypair() for _ in range(6)]
    threads = [threading.Thread(target=sign_commit, args=(repo, commit_id, k)) for k in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    signers = {s.key for s in commit_signatures(repo, commit_id)}
    assert signers == {k.public_text for k in keys}
    served = repo.path / "objects" / commitmeta_relpath(commit_id)
    assert {s.key for s in decode_signatures(served.read_bytes())} == signers
