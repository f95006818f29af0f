"""Archive repositories as static files: the .filez encoding and the metadata files.

What a client fetches over HTTP must be decodable and verifiable on its own
(docs/http-layout.md); what is not exactly the object is refused with
CorruptObjectError (FormatError when it is not a .filez payload at all).
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from store import CorruptObjectError, FileHeader, FormatError, ObjectType, RepoMode, Repository
from store.filez import CHUNK, MAGIC_ZLIB, MAGIC_ZSTD, decode_filez, encode_filez
from store.fsck import fsck
from store.ids import ObjectId
from store.trees import lookup
from tests.helpers import commit_files

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

HEADER = FileHeader(0, 0, stat.S_IFREG | 0o644)


def _object(content: bytes, header: FileHeader = HEADER) -> tuple[ObjectId, bytes]:
    return header.object_id(content), encode_filez(header, content)


class _CountingStream(io.RawIOBase):
    """A stream that counts what was read of it."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = io.BytesIO(data)
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        chunk = self._data.read(len(view))
        view[: len(chunk)] = chunk
        self.read_bytes += len(chunk)
        return len(chunk)


@pytest.mark.parametrize("size", [0, 1, 5000, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_filez_round_trips_and_verifies(size: int) -> None:
    content = os.urandom(size // 2) + bytes(size - size // 2)
    object_id, payload = _object(content)
    assert payload[:4] == MAGIC_ZSTD
    decoded = decode_filez(payload, object_id)
    assert decoded.content == content and decoded.size == size and decoded.header == HEADER
    out = io.BytesIO()
    streamed = decode_filez(io.BytesIO(payload), object_id, out=out)
    assert streamed.content is None and out.getvalue() == content


def test_symlink_object_round_trips() -> None:
    header = FileHeader(1000, 1000, stat.S_IFLNK | 0o777, b"target")
    object_id, payload = _object(b"", header)
    assert decode_filez(payload, object_id).header == header


def test_garbage_is_a_format_error() -> None:
    object_id, payload = _object(b"hello")
    for garbage in (b"", b"SWZ", os.urandom(100), b"GIF89a" + payload[6:]):
        with pytest.raises(FormatError):
            decode_filez(garbage, object_id)


@pytest.mark.parametrize("cut", [1, 4, 10])
def test_truncated_payload_is_refused(cut: int) -> None:
    object_id, payload = _object(os.urandom(3000))
    with pytest.raises(CorruptObjectError):
        decode_filez(payload[:-cut], object_id)


def test_wrong_id_and_trailing_bytes_are_refused() -> None:
    object_id, payload = _object(b"hello")
    other_id, _ = _object(b"hellO")
    with pytest.raises(CorruptObjectError, match="does not hash to its id"):
        decode_filez(payload, other_id)
    with pytest.raises(CorruptObjectError, match="trailing bytes"):
        decode_filez(payload + b"x", object_id)


def test_a_payload_that_lies_about_its_size_is_refused_reading_little() -> None:
    """A prefix that claims a small size in front of a large stream (a bomb) is refused
    after at most the claim's chunk is read: the rest of the stream is never touched."""
    big = os.urandom(8 * CHUNK)
    object_id, payload = _object(big)
    lying = bytearray(payload)
    lying[4:12] = (1000).to_bytes(8, "big")
    stream = _CountingStream(bytes(lying))
    with pytest.raises(CorruptObjectError, match="beyond its recorded size"):
        decode_filez(io.BufferedReader(stream, 4096), object_id)
    assert stream.read_bytes < len(payload) // 2
    claims_more = bytearray(payload)
    claims_more[4:12] = (9 * CHUNK).to_bytes(8, "big")
    with pytest.raises(CorruptObjectError):
        decode_filez(bytes(claims_more), object_id)


def test_max_size_refuses_before_reading_content() -> None:
    object_id, payload = _object(bytes(5000))
    with pytest.raises(CorruptObjectError, match="more than the 4096 allowed"):
        decode_filez(payload, object_id, max_size=4096)
    assert decode_filez(payload, object_id, max_size=5000).size == 5000


def test_reads_at_most_the_claim_plus_one() -> None:
    object_id, payload = _object(os.urandom(2 * CHUNK + 5))
    stream = _CountingStream(payload + bytes(10 << 20))
    with pytest.raises(CorruptObjectError, match="trailing"):
        decode_filez(stream, object_id)  # type: ignore[arg-type]
    assert stream.read_bytes == len(payload) + 1


def _swz1(header: FileHeader, content: bytes) -> bytes:
    encoded = header.encode()
    return (
        struct.pack(">4sQI", MAGIC_ZLIB, len(content), len(encoded))
        + encoded
        + zlib.compress(content)
    )


def test_zlib_objects_of_older_repositories_stay_readable(tmp_path: Path) -> None:
    content = b"old object\n" * 1000
    object_id = HEADER.object_id(content)
    assert decode_filez(_swz1(HEADER, content), object_id).content == content
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    commit_files(repo, tmp_path / "src", {"old": content})
    file_id = lookup(repo, repo.refs()["main"], "/old").file
    assert file_id == object_id
    path = Path(repo.object_path(object_id))
    path.chmod(0o644)
    path.write_bytes(_swz1(HEADER, content))  # as a repository before zstd wrote it
    assert repo.read_file(object_id) == content
    assert fsck(repo).clean


def test_archive_commit_writes_servable_files(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    commit_id = commit_files(repo, tmp_path / "src", {"a": "hello\n", "d/b": "x" * 100})
    commit = repo.read_commit(commit_id)
    served = Path(repo.object_path(commit_id, ObjectType.COMMIT))
    assert served.name.endswith(".commit") and served.read_bytes() == commit.encode()
    assert Path(repo.object_path(commit.tree, ObjectType.DIRTREE)).read_bytes() == (
        repo.read_dirtree(commit.tree).encode()
    )
    assert Path(repo.object_path(commit.meta, ObjectType.DIRMETA)).read_bytes() == (
        repo.read_dirmeta(commit.meta).encode()
    )
    file_id = lookup(repo, commit_id, "/a").file
    assert file_id is not None
    payload = Path(repo.object_path(file_id)).read_bytes()
    assert payload[:4] == MAGIC_ZSTD
    assert decode_filez(payload, file_id).content == b"hello\n"
    for path in (served, Path(repo.object_path(file_id))):
        assert stat.S_IMODE(path.stat().st_mode) & 0o444 == 0o444  # any web server reads it


def test_fsck_finds_a_damaged_metadata_file(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    commit_id = commit_files(repo, tmp_path / "src", {"a": "hello\n"})
    tree_file = Path(repo.object_path(repo.read_commit(commit_id).tree, ObjectType.DIRTREE))
    tree_file.write_bytes(tree_file.read_bytes() + b"x")
    report = fsck(repo)
    assert not report.clean
    assert any("dirtree" in p.message for p in report.problems)


def test_a_symlink_claiming_content_is_refused_before_reading_it() -> None:
    header = FileHeader(0, 0, stat.S_IFLNK | 0o777, b"target")
    object_id = header.object_id(b"")
    lying = bytearray(encode_filez(header, b""))
    lying[4:12] = (1 << 40).to_bytes(8, "big")
    stream = _CountingStream(bytes(lying) + bytes(1 << 20))
    with pytest.raises(CorruptObjectError, match="symlink with content"):
        decode_filez(stream, object_id)  # type: ignore[arg-type]
    assert stream.read_bytes <= len(lying)
