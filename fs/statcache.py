"""The stat cache: lets an unchanged re-commit skip reading unchanged files.

As git's index does, it remembers, per (device, inode) of a source file, the stat
fields that change whenever content or metadata change (size, mtime, ctime, mode,
uid, gid) together with the digest of the header that was committed and the file
object's id. A hit needs all of them to match, the header (recomputed from the
current stat, xattrs and commit options) to hash the same, and the object to be
in the repository.

Safe when a file changes under it: an entry is only written when the file's ctime
is older than the start of the commit by more than the clock's granularity, so a
write that lands after the file was read always changes the ctime the cache
compares ("racily clean" files are simply read again next time).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import blake3

_KEY = struct.Struct(">QQ")
_VALUE = struct.Struct(">QqqIII32s32s")
RACY_MARGIN_NS = 1_000_000_000


def cache_key(st: os.stat_result) -> bytes:
    return _KEY.pack(st.st_dev, st.st_ino)


def header_digest(header_bytes: bytes) -> bytes:
    return blake3.blake3(header_bytes).digest()


@dataclass(frozen=True)
class CacheRecord:
    size: int
    mtime_ns: int
    ctime_ns: int
    mode: int
    uid: int
    gid: int
    header_digest: bytes
    file_id: bytes

    @classmethod
    def of(cls, st: os.stat_result, header_digest: bytes, file_id: bytes) -> CacheRecord:
        return cls(
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
            st.st_mode,
            st.st_uid,
            st.st_gid,
            header_digest,
            file_id,
        )

    def encode(self) -> bytes:
        return _VALUE.pack(
            self.size,
            self.mtime_ns,
            self.ctime_ns,
            self.mode,
            self.uid,
            self.gid,
            self.header_digest,
            self.file_id,
        )

    @classmethod
    def decode(cls, raw: bytes) -> CacheRecord | None:
        if len(raw) != _VALUE.size:
            return None
        return cls(*_VALUE.unpack(raw))

    def matches(self, st: os.stat_result, header_digest: bytes) -> bool:
        return (
            self.size == st.st_size
            and self.mtime_ns == st.st_mtime_ns
            and self.ctime_ns == st.st_ctime_ns
            and self.mode == st.st_mode
            and self.uid == st.st_uid
            and self.gid == st.st_gid
            and self.header_digest == header_digest
        )


def cacheable(st: os.stat_result, commit_started_ns: int) -> bool:
    """Only files untouched for a while before the commit began may be cached."""
    newest = max(st.st_mtime_ns, st.st_ctime_ns)
    return newest < commit_started_ns - RACY_MARGIN_NS
