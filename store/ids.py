"""Object ids: 32-byte blake3 digests, shown as 64 lower-case hex digits."""

from __future__ import annotations

import enum
import string
from typing import NewType

import blake3

from store.errors import SapwoodError

ObjectId = NewType("ObjectId", bytes)

ID_BYTES = 32
ID_HEX = 64
MIN_PREFIX_HEX = 4
_HEX = frozenset(string.hexdigits.lower())


class ObjectType(enum.Enum):
    """The four object types. The value is the one-byte tag used in the index."""

    FILE = b"f"
    DIRTREE = b"t"
    DIRMETA = b"m"
    COMMIT = b"c"

    @property
    def suffix(self) -> str:
        """File-name suffix of the object, as OSTree names them."""
        return _SUFFIXES[self]


_SUFFIXES = {
    ObjectType.FILE: "file",
    ObjectType.DIRTREE: "dirtree",
    ObjectType.DIRMETA: "dirmeta",
    ObjectType.COMMIT: "commit",
}


def digest(data: bytes) -> ObjectId:
    """The id of a metadata object: the blake3 digest of its canonical encoding."""
    return ObjectId(blake3.blake3(data).digest())


def to_hex(object_id: bytes) -> str:
    """The 64 lower-case hex digits of an object id."""
    return object_id.hex()


def from_hex(text: str) -> ObjectId:
    """Parse a full 64-digit id; raises SapwoodError on anything else."""
    if not is_full_hex(text):
        raise SapwoodError(f"not an object id: {text!r}")
    return ObjectId(bytes.fromhex(text))


def is_full_hex(text: str) -> bool:
    return len(text) == ID_HEX and set(text) <= _HEX


def is_hex_prefix(text: str) -> bool:
    """True for something a user may type as an abbreviated commit id."""
    return MIN_PREFIX_HEX <= len(text) <= ID_HEX and set(text) <= _HEX
