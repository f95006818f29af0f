"""Large archive objects for the mount's tests, and such objects as repositories made
before zstd hold them (SWZ1: one zlib stream)."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

from store import ObjectId, RepoMode, Repository, lookup
from store.filez import MAGIC_ZLIB, PREFIX
from tests.helpers import commit_dir


def large_archive_file(
    tmp_path: Path, name: str = "large", swz1: bool = False
) -> tuple[Repository, ObjectId, ObjectId, bytes]:
    """An archive repository (tmp_path/repo) whose commit holds /NAME, 3 MiB of random
    bytes (verified in a worker thread on its first read), as an SWZ1 object if
    ``swz1``: the repository, the commit, the file's object and its content."""
    repo = Repository.init(tmp_path / "repo", RepoMode.ARCHIVE)
    source = tmp_path / "src"
    source.mkdir()
    content = os.urandom(3 << 20)
    (source / name).write_bytes(content)
    commit_id = commit_dir(repo, source)
    file_id = lookup(repo, commit_id, f"/{name}").file
    assert file_id is not None
    if swz1:
        rewrite_as_swz1(repo, file_id, content)
    return repo, commit_id, file_id, content


def rewrite_as_swz1(repo: Repository, file_id: ObjectId, content: bytes) -> None:
    """Replace an archive object's file by the SWZ1 encoding of the same object: no
    frames, so the mount spools it (mountd/sources.py)."""
    path = repo.content.path(file_id)
    data = path.read_bytes()
    (header_len,) = PREFIX.unpack_from(data)[2:]
    header = data[PREFIX.size : PREFIX.size + header_len]
    path.chmod(0o644)
    path.write_bytes(
        PREFIX.pack(MAGIC_ZLIB, len(content), len(header)) + header + zlib.compress(content, 1)
    )
