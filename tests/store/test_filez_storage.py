"""The storage path of a pulled file object (docs/decisions.md, "Pull's storage path and
fixed costs, session 9"): decoded from its ``.filez`` payload straight from the frames,
spooled to disk only when large, and staged with as few system calls as its bits allow,
the object file on disk still exactly what the mode requires."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from store import CorruptObjectError, FileHeader, ObjectId, RepoMode, Repository
from store.content import USER_META_XATTR, process_umask, user_object_mode
from store.filez import CHUNK, decode_filez, encode_filez
from store.pull.objects import decoded_filez
from store.transaction import SMALL_FILE


def _payload(content: bytes, mode: int = 0o644) -> tuple[FileHeader, ObjectId, bytes]:
    header = FileHeader(0, 0, stat.S_IFREG | mode)
    return header, header.object_id(content), encode_filez(header, content)


@pytest.mark.parametrize("size", [0, 7, CHUNK - 1, CHUNK, 2 * CHUNK + 3])
def test_frames_decode_to_the_content_in_memory_and_streamed(size: int) -> None:
    content = os.urandom(size)
    _, object_id, payload = _payload(content)
    kept = decode_filez(io.BytesIO(payload), object_id, out=io.BytesIO(), keep=size or 1)
    assert kept.content == content and kept.verified is not None
    assert kept.verified.content == content
    out = io.BytesIO()
    streamed = decode_filez(io.BytesIO(payload), object_id, out=out)
    assert streamed.content is None and streamed.verified is None and out.getvalue() == content


def test_a_frame_that_holds_another_frames_share_is_refused() -> None:
    """Two chunks' frames swapped: each declares the other's size, refused before it is
    inflated (no stream layer in between checks it any more)."""
    content = os.urandom(CHUNK) + b"tail"
    _, object_id, payload = _payload(content)
    head = 4 + 8 + 4 + len(FileHeader(0, 0, stat.S_IFREG | 0o644).encode())
    first_len = int.from_bytes(payload[head : head + 4], "big")
    first = payload[head : head + 4 + first_len]
    second = payload[head + 4 + first_len :]
    with pytest.raises(CorruptObjectError, match="recorded size"):
        decode_filez(payload[:head] + second + first, object_id)


def test_a_small_object_makes_no_spool_file_and_a_large_one_does(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    _, small_id, small = _payload(b"small\n")
    content = decoded_filez(io.BytesIO(small), small_id, 1 << 30, str(spool_dir))
    assert content._spool._file is None  # held in memory: nothing made on disk
    assert list(content.chunks()) == []
    content.close()
    big = os.urandom(SMALL_FILE + 5)
    _, big_id, payload = _payload(big)
    content = decoded_filez(io.BytesIO(payload), big_id, 1 << 30, str(spool_dir))
    try:
        assert content._spool._file is not None
        assert b"".join(content.chunks()) == big
    finally:
        content.close()
    assert os.listdir(spool_dir) == []  # unlinked files only


@pytest.mark.parametrize("mode", [0o644, 0o755, 0o444, 0o555, 0o600, 0o664, 0o4755])
def test_bare_user_objects_get_their_bits_their_xattr_and_no_time(
    tmp_path: Path, mode: int
) -> None:
    """Files the owner may write are created with their final bits (no chmod after),
    the others made writable for the xattr and then chmodded: either way the object
    file holds the bits, the header and mtime 0, and fsck is clean."""
    repo = Repository.init(tmp_path / "repo", mode=RepoMode.BARE_USER)
    header, object_id, payload = _payload(b"content %o\n" % mode, mode)
    decoded = decode_filez(payload, object_id)
    assert decoded.verified is not None
    with repo.transaction() as txn:
        assert txn.write_verified_file(decoded.verified) == object_id
    path = repo.content.path(object_id)
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == user_object_mode(mode)
    assert st.st_mtime_ns == 0
    assert os.getxattr(path, USER_META_XATTR) == header.encode()
    assert repo.verify_file(object_id) is None


def test_the_umask_is_read_without_being_set() -> None:
    """process_umask reads /proc/self/status: os.umask() would set it, and a file
    another thread created meanwhile would take the wrong bits."""
    old = os.umask(0o027)
    try:
        assert process_umask() == 0o027
        os.umask(0o077)
        assert process_umask() == 0o077
    finally:
        os.umask(old)
    assert process_umask() == old
