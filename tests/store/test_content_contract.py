"""Contract tests run against every content store (one per repository mode).

As dulwich runs one ObjectStore test mixin against each implementation: what a
store stages, it reads back byte for byte, with the header it was given.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from store import FileHeader, ObjectId, ObjectMissingError, RepoMode
from store.content import STORES, ContentStore, content_store
from tests.helpers import IS_ROOT

HEADERS = {
    "regular": (FileHeader(0, 0, stat.S_IFREG | 0o644, b"", ((b"user.x", b"y"),)), b"content\n"),
    "empty": (FileHeader(0, 0, stat.S_IFREG | 0o600), b""),
    "executable": (FileHeader(0, 0, stat.S_IFREG | 0o755), b"#!/bin/sh\n" * 1000),
    "symlink": (FileHeader(0, 0, stat.S_IFLNK | 0o777, b"../target"), b""),
}


@pytest.fixture(params=sorted(STORES, key=lambda m: m.value), ids=lambda m: m.value)
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
    with store.open_content(object_id, header) as stream:
        assert stream.read() == (b"" if header.is_symlink else data)


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
def test_user_modes_store_objects_without_write_bits(
    store: ContentStore, tmp_path: Path, kind: str
) -> None:
    header, data = HEADERS[kind]
    object_id = _publish(store, tmp_path, header, data)
    mode = os.stat(store.path(object_id)).st_mode
    if store.mode in (RepoMode.BARE_USER, RepoMode.BARE_USER_ONLY):
        assert mode & 0o222 == 0
        assert mode & 0o111 == header.mode & 0o111
    elif store.mode is RepoMode.BARE:
        assert stat.S_IMODE(mode) == stat.S_IMODE(header.mode)


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
        store.open_content(ObjectId(b"\0" * 32), header).close()


@pytest.mark.skipif(not IS_ROOT, reason="needs root to set ownership")
def test_bare_keeps_real_ownership_and_setuid(tmp_path: Path) -> None:
    store = content_store(RepoMode.BARE, tmp_path)
    header = FileHeader(1234, 5678, stat.S_IFREG | 0o4755)
    object_id = _publish(store, tmp_path, header, b"su")
    st = os.stat(store.path(object_id))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o4755)
