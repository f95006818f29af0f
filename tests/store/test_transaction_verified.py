"""Storing a file object decode_filez has just verified, without hashing it again.

Only decode_filez makes the VerifiedFile such a store takes; what it stores is what
was hashed, and a repository mode that would keep another object refuses it.
"""

from __future__ import annotations

import io
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from store import CorruptObjectError, FileHeader, ModePolicyError, RepoMode, Repository
from store.filez import VerifiedFile, decode_filez, encode_filez
from store.fsck import fsck
from store.ids import ObjectId

HEADER = FileHeader(0, 0, stat.S_IFREG | 0o644)


def _payload(content: bytes, header: FileHeader = HEADER) -> tuple[ObjectId, bytes]:
    return header.object_id(content), encode_filez(header, content)


def test_a_verified_small_object_is_stored_as_write_file_would(user_repo: Repository) -> None:
    content = b"verified once\n" * 100
    object_id, payload = _payload(content)
    decoded = decode_filez(io.BytesIO(payload), object_id, out=io.BytesIO(), keep=1 << 20)
    assert decoded.verified is not None and decoded.content == content
    with user_repo.transaction() as txn:
        assert txn.write_verified_file(decoded.verified) == object_id
    assert user_repo.read_file(object_id) == content
    report = fsck(user_repo, all_objects=True)
    assert report.clean and report.file_objects == 1


def test_content_above_keep_goes_to_out_and_is_not_verified_in_memory() -> None:
    content = b"x" * 5000
    object_id, payload = _payload(content)
    out = io.BytesIO()
    decoded = decode_filez(io.BytesIO(payload), object_id, out=out, keep=4096)
    assert decoded.verified is None and decoded.content is None
    assert out.getvalue() == content


def test_only_decode_filez_makes_a_verified_file() -> None:
    with pytest.raises(TypeError):
        VerifiedFile(object(), ObjectId(b"\0" * 32), HEADER, HEADER.encode(), b"forged")


def test_a_payload_that_is_not_its_object_gives_nothing_to_store() -> None:
    object_id, payload = _payload(b"one content")
    _, other = _payload(b"another content")
    with pytest.raises(CorruptObjectError):
        decode_filez(io.BytesIO(other), object_id, keep=1 << 20)
    assert decode_filez(io.BytesIO(payload), object_id, keep=1 << 20).verified is not None


def test_a_mode_that_drops_ownership_refuses_it_and_stores_nothing(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo", RepoMode.BARE_USER_ONLY)
    try:
        header = FileHeader(1000, 1000, stat.S_IFREG | 0o644)
        object_id, payload = _payload(b"owned", header)
        verified = decode_filez(payload, object_id).verified
        assert verified is not None
        with pytest.raises(ModePolicyError), repo.transaction() as txn:
            txn.write_verified_file(verified)
        assert not repo.has_object(object_id)
    finally:
        repo.close()


def test_writers_in_several_threads_stage_apart_and_all_is_committed(
    user_repo: Repository,
) -> None:
    contents = [f"object {n}\n".encode() * (n + 1) for n in range(64)]
    txn = user_repo.transaction()
    together = threading.Barrier(4)  # the first four writes run in four threads

    def write(n: int) -> ObjectId:
        if n < 4:
            together.wait(timeout=30)
        return txn.write_file(HEADER, contents[n])

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(write, range(len(contents))))
    staged_in = {p.parent for p in txn.staging.rglob("*.file")}
    assert len(staged_in) > 1 and txn.staging not in staged_in  # one directory per thread
    txn.commit()
    assert [user_repo.read_file(i) for i in ids] == contents
    assert fsck(user_repo, all_objects=True).clean
    assert list((user_repo.path / "tmp").iterdir()) == []
