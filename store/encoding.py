"""Primitives of the canonical binary encoding (see docs/format.md).

Integers are fixed-width big-endian, byte strings are a u32 length followed by the
bytes, ids are 32 raw bytes. There is exactly one encoding of every value, so an
object's id is a function of its meaning.
"""

from __future__ import annotations

import struct

from store.errors import FormatError
from store.ids import ID_BYTES, ObjectId

_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")


def _pack(fmt: struct.Struct, value: int, name: str) -> bytes:
    try:
        return fmt.pack(value)
    except struct.error:
        raise FormatError(f"{value} does not fit the encoding's {name}") from None


class Writer:
    """Accumulates an encoding. A value out of its field's range is a FormatError (the
    object constructors refuse such values first; this keeps struct.error from ever
    escaping an encoder)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def raw(self, data: bytes) -> None:
        self._parts.append(data)

    def u8(self, value: int) -> None:
        if not 0 <= value <= 255:
            raise FormatError(f"{value} does not fit the encoding's u8")
        self._parts.append(bytes((value,)))

    def u32(self, value: int) -> None:
        self._parts.append(_pack(_U32, value, "u32"))

    def i64(self, value: int) -> None:
        self._parts.append(_pack(_I64, value, "i64"))

    def blob(self, data: bytes) -> None:
        self._parts.append(_pack(_U32, len(data), "u32 length"))
        self._parts.append(data)

    def object_id(self, value: bytes) -> None:
        if len(value) != ID_BYTES:
            raise FormatError(f"id of {len(value)} bytes")
        self._parts.append(value)

    def pairs(self, items: tuple[tuple[bytes, bytes], ...]) -> None:
        self.u32(len(items))
        for key, value in items:
            self.blob(key)
            self.blob(value)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Decodes an encoding; every read checks bounds and raises FormatError."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._what = what

    def _take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise FormatError(f"truncated {self._what}")
        chunk = bytes(self._data[self._pos : end])
        self._pos = end
        return chunk

    def raw(self, size: int) -> bytes:
        return self._take(size)

    def u8(self) -> int:
        return self._take(1)[0]

    def u32(self) -> int:
        return int(_U32.unpack(self._take(4))[0])

    def i64(self) -> int:
        return int(_I64.unpack(self._take(8))[0])

    def blob(self) -> bytes:
        return self._take(self.u32())

    def object_id(self) -> ObjectId:
        return ObjectId(self._take(ID_BYTES))

    def count(self, min_item_size: int) -> int:
        """A list length, refused if the remaining bytes cannot hold it."""
        n = self.u32()
        if n * min_item_size > len(self._data) - self._pos:
            raise FormatError(f"list too long in {self._what}")
        return n

    def pairs(self) -> tuple[tuple[bytes, bytes], ...]:
        n = self.count(8)
        return tuple((self.blob(), self.blob()) for _ in range(n))

    def finish(self) -> None:
        if self._pos != len(self._data):
            raise FormatError(f"trailing bytes after {self._what}")
