"""The values the index's users pass and get back: what it records of an object
(ObjectRecord) and what one write changes (WriteBatch, RefUpdate, ANY). Shared by the
index's reader (store/index.py) and its writer (store/index_write.py)."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from store.errors import FormatError
from store.ids import ObjectId, ObjectType

_U64 = struct.Struct(">Q")


class AnyTarget(enum.Enum):
    """The type of :data:`ANY`: a ref update that moves the ref whatever it holds."""

    ANY = "any"


ANY = AnyTarget.ANY
# What a ref update expects the ref to hold: a commit, None (absent) or ANY.
ExpectedRef = ObjectId | None | AnyTarget


@dataclass(frozen=True)
class ObjectRecord:
    """What the index knows of one object."""

    kind: ObjectType
    payload: bytes

    @property
    def file_size(self) -> int:
        return int(_U64.unpack_from(self.payload)[0])

    @property
    def file_header_bytes(self) -> bytes:
        return self.payload[_U64.size :]

    @classmethod
    def decode(cls, value: bytes) -> ObjectRecord:
        try:
            kind = ObjectType(value[:1])
        except ValueError:
            raise FormatError("unknown object type in the index") from None
        return cls(kind, value[1:])

    def encode(self) -> bytes:
        return self.kind.value + self.payload

    @classmethod
    def for_file(cls, size: int, header: bytes) -> ObjectRecord:
        return cls(ObjectType.FILE, _U64.pack(size) + header)


@dataclass
class RefUpdate:
    name: str
    new: ObjectId | None  # None deletes the ref
    expected: ExpectedRef = ANY  # ObjectId, None (must not exist) or ANY


@dataclass
class WriteBatch:
    """Everything one transaction adds to the index, applied atomically."""

    objects: dict[ObjectId, ObjectRecord] = field(default_factory=dict)
    commits: dict[ObjectId, int] = field(default_factory=dict)
    refs: list[RefUpdate] = field(default_factory=list)
    statcache: dict[bytes, bytes] = field(default_factory=dict)
    partial_clear: set[ObjectId] = field(default_factory=set)
    partial_mark: set[ObjectId] = field(default_factory=set)
    remove_objects: set[ObjectId] = field(default_factory=set)  # also drops commit entries
    statcache_remove: set[bytes] = field(default_factory=set)
    # objects the new ones name without adding them: they must still be indexed
    required: set[tuple[ObjectId, ObjectType]] = field(default_factory=set)  # (id, kind named)
    # commit id -> (the signatures it must hold now: bytes, None for none, or ANY; new)
    commitmeta: dict[ObjectId, tuple[bytes | AnyTarget | None, bytes]] = field(default_factory=dict)
    # check that what each dirtree of ``objects`` names is there (a transaction's commit
    # point; not rebuild-index, which lists what it finds, missing files and all)
    check_trees: bool = False
