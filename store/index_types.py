"""The values the index's users pass and get back: what it records of an object
(ObjectRecord) and what one write changes (WriteBatch, RefUpdate, ANY). Shared by the
index's reader (store/index.py) and its writer (store/index_write.py)."""

from __future__ import annotations

import enum
import struct

from store.errors import FormatError
from store.ids import ObjectId, ObjectType
from store.record import Frozen, Value

_U64 = struct.Struct(">Q")


class AnyTarget(enum.Enum):
    """The type of :data:`ANY`: a ref update that moves the ref whatever it holds."""

    ANY = "any"


ANY = AnyTarget.ANY
# What a ref update expects the ref to hold: a commit, None (absent) or ANY.
ExpectedRef = ObjectId | None | AnyTarget


class ObjectRecord(Frozen):
    """What the index knows of one object."""

    __slots__ = ("kind", "payload")

    kind: ObjectType
    payload: bytes

    def __init__(self, kind: ObjectType, payload: bytes) -> None:
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "payload", payload)

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


class RefUpdate(Value):
    __slots__ = ("expected", "name", "new")

    def __init__(self, name: str, new: ObjectId | None, expected: ExpectedRef = ANY) -> None:
        self.name = name
        self.new = new  # None deletes the ref
        self.expected = expected  # ObjectId, None (must not exist) or ANY


class WriteBatch(Value):
    """Everything one transaction adds to the index, applied atomically."""

    __slots__ = (
        "check_trees",
        "commitmeta",
        "commits",
        "objects",
        "partial_clear",
        "partial_mark",
        "refs",
        "remove_objects",
        "required",
        "statcache",
        "statcache_remove",
    )

    def __init__(
        self,
        *,
        objects: dict[ObjectId, ObjectRecord] | None = None,
        commits: dict[ObjectId, int] | None = None,
        refs: list[RefUpdate] | None = None,
        statcache: dict[bytes, bytes] | None = None,
        partial_clear: set[ObjectId] | None = None,
        partial_mark: set[ObjectId] | None = None,
        remove_objects: set[ObjectId] | None = None,
        statcache_remove: set[bytes] | None = None,
        required: set[tuple[ObjectId, ObjectType]] | None = None,
        commitmeta: dict[ObjectId, tuple[bytes | AnyTarget | None, bytes]] | None = None,
        check_trees: bool = False,
    ) -> None:
        self.objects: dict[ObjectId, ObjectRecord] = {} if objects is None else objects
        self.commits: dict[ObjectId, int] = {} if commits is None else commits
        self.refs: list[RefUpdate] = [] if refs is None else refs
        self.statcache: dict[bytes, bytes] = {} if statcache is None else statcache
        self.partial_clear: set[ObjectId] = set() if partial_clear is None else partial_clear
        self.partial_mark: set[ObjectId] = set() if partial_mark is None else partial_mark
        self.remove_objects: set[ObjectId] = (
            set() if remove_objects is None else remove_objects
        )  # drops commit entries too
        self.statcache_remove: set[bytes] = set() if statcache_remove is None else statcache_remove
        # objects the new ones name without adding them: they must still be indexed
        self.required: set[tuple[ObjectId, ObjectType]] = (
            set() if required is None else required
        )  # (id, kind named)
        # commit id -> (the signatures it must hold now: bytes, None for none, or ANY; new)
        self.commitmeta: dict[ObjectId, tuple[bytes | AnyTarget | None, bytes]] = (
            {} if commitmeta is None else commitmeta
        )
        # check that what each dirtree of ``objects`` names is there (a transaction's commit
        # point; not rebuild-index, which lists what it finds, missing files and all)
        self.check_trees = check_trees
