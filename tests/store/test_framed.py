"""Random access into archive objects (store/framed.py): verified once, then read a
frame at a time; damage refused as the streaming reader refuses it."""

from __future__ import annotations

import os
import stat
import struct
import zlib
from pathlib import Path

import pytest
import zstandard

from store import CorruptObjectError, FileHeader, ObjectId, RepoMode, Repository
from store import framed as framed_module
from store.filez import MAGIC_ZLIB, PREFIX, frames

MIB = 1 << 20
HEADER = FileHeader(0, 0, stat.S_IFREG | 0o644)


def _archive(tmp_path: Path, content: bytes) -> tuple[Repository, ObjectId]:
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    with repo.transaction() as txn:
        file_id = txn.write_file(HEADER, content)
    return repo, file_id


def _first_frame(repo: Repository, file_id: ObjectId) -> tuple[Path, bytes, int]:
    """The object's file (made writable), its bytes, and where its first chunk's length
    is (after the prefix and the header)."""
    path = repo.content.path(file_id)
    data = path.read_bytes()
    (header_len,) = struct.unpack_from(">I", data, 12)
    path.chmod(0o644)
    return path, data, PREFIX.size + header_len


def test_a_verified_object_reads_at_any_offset(tmp_path: Path) -> None:
    content = os.urandom(3 * MIB + 12345)
    repo, file_id = _archive(tmp_path, content)
    framed = repo.open_framed_file(file_id, len(content))
    assert framed is not None and not framed.located
    framed.verify(HEADER.encode())
    assert framed.located and framed.chunks == 4
    for offset, length in [(0, 10), (MIB - 5, 10), (2 * MIB + 7, MIB + 100), (3 * MIB, 1 << 30)]:
        assert framed.read(offset, length) == content[offset : offset + length]
    assert framed.chunk(3) == content[3 * MIB :]
    framed.close()
    repo.close()


def test_content_of_the_same_size_that_is_not_the_object_is_refused(tmp_path: Path) -> None:
    """Valid frames of other bytes: only the hash tells, and nothing is located."""
    content = os.urandom(2 * MIB)
    repo, file_id = _archive(tmp_path, content)
    path, data, start = _first_frame(repo, file_id)
    path.write_bytes(data[:start] + b"".join(frames([b"\1" * (2 * MIB)])))
    framed = repo.open_framed_file(file_id, len(content))
    assert framed is not None
    with pytest.raises(CorruptObjectError, match="hash"):
        framed.verify(HEADER.encode())
    assert not framed.located
    with pytest.raises(ValueError):
        framed.chunk(0)
    framed.close()
    repo.close()


def test_locating_refuses_a_bad_layout_without_inflating(tmp_path: Path) -> None:
    content = os.urandom(MIB + 1)
    repo, file_id = _archive(tmp_path, content)
    path = repo.content.path(file_id)
    path.chmod(0o644)
    with path.open("ab") as grown:
        grown.write(b"x")
    framed = repo.open_framed_file(file_id, len(content))
    assert framed is not None
    with pytest.raises(CorruptObjectError, match="trailing"):
        framed.locate()
    framed.close()
    path.write_bytes(path.read_bytes()[:-100])
    framed = repo.open_framed_file(file_id, len(content))
    assert framed is not None
    with pytest.raises(CorruptObjectError, match="truncated"):
        framed.locate()
    framed.close()
    repo.close()


def test_a_located_frame_that_inflates_beyond_its_share_is_refused(tmp_path: Path) -> None:
    """A frame swapped after verification for one of more bytes (a bomb) is refused
    before it inflates."""
    content = bytes(2 * MIB)
    repo, file_id = _archive(tmp_path, content)
    path, _, start = _first_frame(repo, file_id)
    framed = repo.open_framed_file(file_id, len(content))
    assert framed is not None
    framed.verify(HEADER.encode())
    bomb = zstandard.ZstdCompressor().compress(bytes(64 * MIB))  # records its 64 MiB
    with path.open("r+b") as stream:
        stream.seek(start + 4)  # the first frame, its length left as it was
        stream.write(bomb)
    with pytest.raises(CorruptObjectError):
        framed.read(0, 10)
    framed.close()
    repo.close()


def test_an_object_from_before_zstd_is_not_framed(tmp_path: Path) -> None:
    content = os.urandom(3 * MIB)
    repo, file_id = _archive(tmp_path, content)
    path = repo.content.path(file_id)
    header = HEADER.encode()
    path.chmod(0o644)
    path.write_bytes(
        PREFIX.pack(MAGIC_ZLIB, len(content), len(header)) + header + zlib.compress(content)
    )
    assert repo.open_framed_file(file_id, len(content)) is None
    with pytest.raises(CorruptObjectError, match="index says"):
        repo.open_framed_file(file_id, len(content) + 1)
    assert repo.read_file(file_id) == content
    repo.close()


def test_other_modes_have_no_frames(tmp_path: Path) -> None:
    repo = Repository.init(tmp_path / "repo", RepoMode.BARE_USER_ONLY)
    with repo.transaction() as txn:
        file_id = txn.write_file(HEADER, b"plain")
    with pytest.raises(TypeError):
        repo.open_framed_file(file_id, 5)
    repo.close()


def test_where_frames_start_is_noted_for_a_bounded_number_of_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """attack12: the table grew 8 bytes a MiB while a hostile object was verified,
    outside every budget (8 MiB a TiB). It holds MAX_NOTED frames' starts at most
    (here 2), and a read walks the lengths from the last one noted before it."""
    monkeypatch.setattr(framed_module, "MAX_NOTED", 2, raising=False)
    content = b"".join(bytes([n]) * 16 + bytes(MIB - 16) for n in range(7)) + b"end"
    repo, file_id = _archive(tmp_path, content)
    for verify in (True, False):
        framed = repo.open_framed_file(file_id, len(content))
        assert framed is not None
        if verify:
            framed.verify(HEADER.encode())
        else:
            framed.locate()
        assert framed.chunks == 8 and framed.located_bytes <= 2 * 8
        for index in (7, 0, 3, 5, 6, 1, 2, 4):
            assert framed.chunk(index) == content[index * MIB : (index + 1) * MIB]
        assert framed.read(3 * MIB - 5, MIB + 10) == content[3 * MIB - 5 : 4 * MIB + 5]
        framed.close()
    repo.close()
