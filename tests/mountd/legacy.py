"""Archive objects as repositories made before zstd hold them (SWZ1: one zlib stream)."""

from __future__ import annotations

import zlib

from store import ObjectId, Repository
from store.filez import MAGIC_ZLIB, PREFIX


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
