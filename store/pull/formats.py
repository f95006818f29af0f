"""The formats pull reads that the archive side defines (store/summary.py,
store/signing.py, store/deltas.py), behind the few calls pull makes of them: a
FormatError or CorruptObjectError for anything that does not decode."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO

import blake3

from store.errors import CorruptObjectError, FormatError
from store.ids import ObjectId, ObjectType
from store.record import Frozen, Value
from store.summary import decode_summary

if TYPE_CHECKING:  # store.deltas is imported by a pull that uses a delta (~2 ms)
    from store.deltas import DeltaEntry, Superblock


class Summary(Frozen):
    """The refs a remote offers (name -> commit) and its deltas ((from, to) -> digest
    of the superblock)."""

    __slots__ = ("deltas", "refs")

    refs: dict[str, ObjectId]
    deltas: dict[tuple[ObjectId | None, ObjectId], bytes]

    def __init__(
        self, refs: dict[str, ObjectId], deltas: dict[tuple[ObjectId | None, ObjectId], bytes]
    ) -> None:
        object.__setattr__(self, "refs", refs)
        object.__setattr__(self, "deltas", deltas)


def read_summary(data: bytes) -> Summary:
    """The summary ``data`` encodes; FormatError on anything else."""
    decoded = decode_summary(data)
    refs = {name: value[0] for name, value in decoded.refs.items()}
    return Summary(refs, dict(decoded.deltas))


def verify(data: bytes, signatures: bytes, trusted_keys: tuple[str, ...]) -> str | None:
    """The trusted key (base64) that signed ``data`` among the detached
    ``signatures`` (a .commitmeta or summary.sig file's bytes), or None; FormatError
    if ``signatures`` is no signature set at all."""
    from store.signing import verify_signed  # here: PyNaCl only for sign-verify remotes

    return verify_signed(data, signatures, trusted_keys)


class Delta(Value):
    """A static delta's superblock: how many parts, and its objects in order."""

    __slots__ = ("parts", "superblock")

    def __init__(self, superblock: Superblock, parts: int) -> None:
        self.superblock = superblock
        self.parts = parts

    def objects(
        self, read_part: Callable[[int], bytes]
    ) -> Iterator[tuple[ObjectId, ObjectType, bytes]]:
        """(id, kind, payload) of each object, unverified; ``read_part(i)`` once each."""
        from store.deltas import iter_delta_objects

        yield from iter_delta_objects(self.superblock, read_part)

    def entries(
        self, read_part: Callable[[int], BinaryIO]
    ) -> Iterator[tuple[DeltaEntry, BinaryIO]]:
        """Each entry with its payload as a stream (good until the next one), read from
        the part files ``read_part(i)`` gives (once each; closed once read)."""
        from store.deltas import iter_delta_entries

        yield from iter_delta_entries(self.superblock, read_part)


def open_delta(
    data: bytes, digest: bytes, start: ObjectId | None, end: ObjectId, where: str
) -> Delta:
    """A delta's superblock, if it is the one the summary names (``digest``) and leads
    from ``start`` to ``end``; CorruptObjectError or FormatError otherwise."""
    if blake3.blake3(data).digest() != digest:
        raise CorruptObjectError(f"{where}: the superblock is not the one the summary names")
    try:
        from store.deltas import decode_superblock

        superblock = decode_superblock(data)
    except FormatError as exc:
        raise FormatError(f"{where}: the superblock is not valid: {exc}") from None
    if (superblock.from_id, superblock.to_id) != (start, end):
        raise CorruptObjectError(f"{where}: the superblock describes another delta")
    return Delta(superblock, superblock.parts)
