"""The stat cache table's keys and records: the one definition of their layout.

The index's ``statcache`` table (store/index.py) maps a source file, by its
(st_dev, st_ino), to a :class:`StatCacheRecord`: the stat fields that change whenever
the file's content or metadata change, the filesystem's id, the digest of the header
that was committed, and the id of the file object it vouches for. When a record may be
written and when it vouches for a file is fs/statcache.py's business; this module only
says what the bytes are. Readers reach the table through a
:class:`store.snapshot.Snapshot`, writers through ``Transaction.put_stat_cache``.

Every layout the table ever held ends with the 32-byte file id (:func:`record_file_id`:
prune drops the entries whose object it deletes, whatever their layout); a record of
another size than today's is ignored (decodes to None) and replaced by the next commit.
"""

from __future__ import annotations

import os
import struct

from store.ids import ID_BYTES
from store.record import Frozen

_KEY = struct.Struct(">QQ")
_VALUE = struct.Struct(">QQqqIII32s32s")


def stat_cache_key(st: os.stat_result) -> bytes:
    """The table's key of a source file: u64 st_dev, u64 st_ino."""
    return _KEY.pack(st.st_dev, st.st_ino)


def record_file_id(raw: bytes) -> bytes:
    """The file id a raw record (of any layout so far) vouches for: its last 32 bytes."""
    return raw[-ID_BYTES:]


class StatCacheRecord(Frozen):
    """What the stat cache remembers of one source file (fs/statcache.py explains why)."""

    __slots__ = (
        "ctime_ns",
        "file_id",
        "fsid",
        "gid",
        "header_digest",
        "mode",
        "mtime_ns",
        "size",
        "uid",
    )

    fsid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    mode: int
    uid: int
    gid: int
    header_digest: bytes
    file_id: bytes

    def __init__(
        self,
        fsid: int,
        size: int,
        mtime_ns: int,
        ctime_ns: int,
        mode: int,
        uid: int,
        gid: int,
        header_digest: bytes,
        file_id: bytes,
    ) -> None:
        set_field = object.__setattr__
        set_field(self, "fsid", fsid)
        set_field(self, "size", size)
        set_field(self, "mtime_ns", mtime_ns)
        set_field(self, "ctime_ns", ctime_ns)
        set_field(self, "mode", mode)
        set_field(self, "uid", uid)
        set_field(self, "gid", gid)
        set_field(self, "header_digest", header_digest)
        set_field(self, "file_id", file_id)

    def with_file_id(self, file_id: bytes) -> StatCacheRecord:
        """This record vouching for ``file_id`` instead (the tests forge one so). By
        name: ``__slots__`` are sorted, not in ``__init__``'s order."""
        fields = {name: getattr(self, name) for name in self.__slots__}
        return StatCacheRecord(**{**fields, "file_id": file_id})

    @classmethod
    def of(
        cls, fsid: int, st: os.stat_result, header_digest: bytes, file_id: bytes
    ) -> StatCacheRecord:
        return cls(
            fsid,
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
            self.fsid,
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
    def decode(cls, raw: bytes) -> StatCacheRecord | None:
        """The record, or None for a record of another layout (an older version's)."""
        if len(raw) != _VALUE.size:
            return None
        return cls(*_VALUE.unpack(raw))

    def matches(self, fsid: int, st: os.stat_result, header_digest: bytes) -> bool:
        """Whether the file as ``st`` shows it now is the one recorded, with this header."""
        return (
            self.fsid == fsid
            and self.size == st.st_size
            and self.mtime_ns == st.st_mtime_ns
            and self.ctime_ns == st.st_ctime_ns
            and self.mode == st.st_mode
            and self.uid == st.st_uid
            and self.gid == st.st_gid
            and self.header_digest == header_digest
        )
