"""Contract tests run against every content store (one per repository mode).

As dulwich runs one ObjectStore test mixin against each implementation: what a
store stages, it reads back byte for byte, with the header it was given.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from store import CorruptObjectError, FileHeader, ObjectId, ObjectMissingError, RepoMode
from store.content import STORES, ContentStore, content_store
from tests.helpers import IS_ROOT

HEADERS = {
    "regular": (FileHeader(0, 0, stat.S_IFREG | 0o644, b"", ((b"user.x", b"y"),)), b"content\n"),
    "empty": (FileHeader(0, 0, stat.S_IFREG | 0o600), b""),
    "executable": (FileHeader(0, 0, stat.S_IFREG | 0o755), b"#!/bin/sh\n" * 1000),
    "symlink": (FileHeader(0, 0, stat.S_IFLNK | 0o777, b"../target"), b""),
}

MODES = sorted(STORES, key=lambda m: m.value)


@pytest.fixture(params=MODES, ids=lambda m: m.value)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ContentStore:
    mode: RepoMode = request.param
    if mode is RepoMode.BARE and not IS_ROOT:
        pytest.skip("bare mode needs root")
    objects = tmp_path / "objects"
    objects.mkdir()
    return content_store(mode, objects)


def _publish(store: ContentStore, tmp_path: Path, header: FileHeader, data: bytes) -> ObjectId:
    object_id = header.object_id(data)
    staged = tmp_path / "staged"
    store.stage(str(staged), header, [data])
    target = store.path(object_id)
    target.parent.mkdir(exist_ok=True)
    os.rename(staged, target)
    return object_id


@pytest.mark.parametrize("kind", sorted(HEADERS))
def test_content_reads_back(store: ContentStore, tmp_path: Path, kind: str) -> None:
    header, data = HEADERS[kind]
    object_id = _publish(store, tmp_path, header, data)
    with store.open_content(object_id, header, len(data)) as stream:
        assert stream.read() == (b"" if header.is_symlink else data)
    assert store.verify(object_id, header.encode(), len(data)) is None


@pytest.mark.parametrize("kind", sorted(HEADERS))
def test_disk_header_matches_what_the_mode_records(
    store: ContentStore, tmp_path: Path, kind: str
) -> None:
    header, data = HEADERS[kind]
    if store.mode is RepoMode.BARE and header.is_symlink:
        header = FileHeader(0, 0, header.mode, header.symlink_target)  # no user.* on symlinks
    object_id = _publish(store, tmp_path, header, data)
    on_disk = store.disk_header(object_id)
    if store.mode is RepoMode.BARE_USER_ONLY:
        assert on_disk is None
    else:
        assert on_disk == header


@pytest.mark.parametrize("kind", ["regular", "executable"])
def test_user_modes_store_objects_with_the_recorded_bits(
    store: ContentStore, tmp_path: Path, kind: str
) -> None:
    """bare-user objects keep the recorded bits masked with 0775, plus u+r (OSTree's
    rule): a hardlinked user-mode checkout shows them (docs/decisions.md)."""
    header, data = HEADERS[kind]
    object_id = _publish(store, tmp_path, header, data)
    st = os.stat(store.path(object_id))
    mode = st.st_mode
    assert stat.S_ISREG(mode) and st.st_mtime_ns == 0  # content carries no time
    if store.mode in (RepoMode.BARE_USER, RepoMode.BARE_USER_ONLY):
        assert stat.S_IMODE(mode) == stat.S_IMODE(header.mode) == (0o644, 0o755)[kind != "regular"]
    elif store.mode is RepoMode.BARE:
        assert stat.S_IMODE(mode) == stat.S_IMODE(header.mode)
    else:  # archive: a compressed file whose bits are its own; the header keeps the content's
        assert store.mode is RepoMode.ARCHIVE
        assert stat.S_IMODE(mode) == 0o644
        assert store.disk_header(object_id) == header
        assert store.path(object_id).read_bytes()[:4] == b"SWZ2"  # zstd chunks (store/filez.py)


def test_bare_user_stores_symlinks_as_regular_files(tmp_path: Path) -> None:
    store = content_store(RepoMode.BARE_USER, tmp_path)
    header, data = HEADERS["symlink"]
    object_id = _publish(store, tmp_path, header, data)
    path = store.path(object_id)
    assert stat.S_ISREG(os.lstat(path).st_mode)
    assert path.read_bytes() == b"../target"


def test_missing_object_is_reported(store: ContentStore) -> None:
    header, _ = HEADERS["regular"]
    with pytest.raises(ObjectMissingError):
        store.open_content(ObjectId(b"\0" * 32), header, 8).close()


@pytest.mark.skipif(not IS_ROOT, reason="needs root to set ownership")
def test_bare_keeps_real_ownership_and_setuid(tmp_path: Path) -> None:
    store = content_store(RepoMode.BARE, tmp_path)
    header = FileHeader(1234, 5678, stat.S_IFREG | 0o4755)
    object_id = _publish(store, tmp_path, header, b"su")
    st = os.stat(store.path(object_id))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o4755)


def _replace_object(store: ContentStore, object_id: ObjectId, tmp_path: Path, how: str) -> None:
    """Put something hostile where an object file was."""
    path = store.path(object_id)
    path.unlink()
    if how == "symlink":
        secret = tmp_path / "secret"
        secret.write_bytes(b"root:x:0:0:not an object\n")
        path.symlink_to(secret)
    elif how == "fifo":
        os.mkfifo(path)
    elif how == "directory":
        path.mkdir()
    else:  # a regular file of another size
        path.write_bytes(b"content\n" + b"x")


@pytest.mark.parametrize("how", ["symlink", "fifo", "directory", "grown"])
def test_hostile_object_files_are_refused_without_blocking(
    store: ContentStore, tmp_path: Path, how: str
) -> None:
    """Objects are opened without following links or blocking, and must be regular files
    of the recorded size: a FIFO must not hang the reader, a symlink must not be read."""
    header, data = HEADERS["regular"]
    object_id = _publish(store, tmp_path, header, data)
    _replace_object(store, object_id, tmp_path, how)
    with pytest.raises(CorruptObjectError):
        store.open_content(object_id, header, len(data)).read()
    problem = store.verify(object_id, header.encode(), len(data))
    assert problem is not None and problem != ""


def test_archive_objects_stream_and_refuse_bombs(tmp_path: Path) -> None:
    """Archive content inflates as it is read, never beyond the recorded size."""
    store = content_store(RepoMode.ARCHIVE, tmp_path)
    header = FileHeader(0, 0, stat.S_IFREG | 0o644)
    data = bytes(64 << 20)  # 64 MiB of zeros: about 64 KiB compressed
    object_id = _publish(store, tmp_path, header, data)
    assert os.stat(store.path(object_id)).st_size < 1 << 20
    with store.open_content(object_id, header, len(data)) as stream:
        first = stream.read(1 << 20)
        assert first == bytes(1 << 20)
        assert sum(len(chunk) for chunk in iter(lambda: stream.read(1 << 20), b"")) == (
            len(data) - len(first)
        )
    with pytest.raises(CorruptObjectError, match="index says 1000"):
        store.open_content(object_id, header, 1000).read()
    # A forged object whose prefix agrees with a small size but whose stream is a bomb.
    path = store.path(object_id)
    raw = bytearray(path.read_bytes())
    raw[4:12] = (1000).to_bytes(8, "big")
    path.chmod(0o644)
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptObjectError, match="beyond its recorded size"):
        store.open_content(object_id, header, 1000).read()
