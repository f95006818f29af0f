"""Step 3 of a pull (see store.pull.pull): a static delta, when one leads to a
wanted commit, applied: its parts spooled two at a time, its objects verified one by
one exactly as single objects are; content is stored, metadata kept for the walk."""

from __future__ import annotations

import contextlib
import io
from concurrent.futures import Future
from functools import partial
from typing import TYPE_CHECKING, BinaryIO

from store.durability import space_errors, temporary_file
from store.errors import CorruptObjectError, NetworkError, ObjectMissingError
from store.ids import ObjectId, ObjectType
from store.pull import formats
from store.pull.batches import Stopped
from store.pull.job import GROUP, _Job, _settle, _Wanted
from store.pull.objects import DecodedContent, decoded_filez, verified_meta
from store.transaction import Transaction

if TYPE_CHECKING:
    from store.deltas import DeltaEntry

_INLINE_PAYLOAD = 1 << 20  # a delta's file object up to this size goes to the writer as bytes
_GROUP_BYTES = 1 << 20  # payload bytes of small objects that go to a writer together
_PART_BUFFER = 1 << 20  # a spooled part is read through a buffer this large
# A part up to this size is kept in memory, not spooled (written to a file and read back
# through a buffer: ~5 ms of an update's 2.9 MiB part, its only one); two parts are in
# flight at most, so at most twice this is held. A larger part (a first pull's, ~32
# MiB) goes to a file: parts as large as max_object_size once filled memory (F5).
_PART_IN_MEMORY = 8 << 20


class _Deltas(_Job):
    """Static deltas, applied."""

    def _use_delta(
        self, want: _Wanted, offered: dict[tuple[ObjectId | None, ObjectId], bytes]
    ) -> None:
        if want.new not in self.commits:
            return  # the commit is here already: its tree too, or the walk finds what lacks
        for start in (want.old, None):
            if (start, want.new) in offered and (start is None or self.repo.has_object(start)):
                name = want.new.hex() if start is None else f"{start.hex()}-{want.new.hex()}"
                self.tracker.phase("delta")
                self._apply_delta(name, offered[(start, want.new)], start, want.new)
                self.report.deltas.append(name)
                return

    def _apply_delta(self, name: str, digest: bytes, start: ObjectId | None, end: ObjectId) -> None:
        base = f"deltas/{name}/"
        data = self._get(base + "superblock", self.settings.max_metadata_size, "delta superblock")
        delta = formats.open_delta(data, digest, start, end, f"{self.where}: delta {name}")
        futures: dict[int, Future[BinaryIO]] = {}
        sizes = delta.superblock.part_sizes

        def ensure(index: int) -> None:
            if index < delta.parts and index not in futures:
                futures[index] = self.pool.submit(self._spool_part, f"{base}{index}", sizes[index])

        def read_part(index: int) -> BinaryIO:
            ensure(index)
            ensure(index + 1)  # two parts in flight, as OSTree: parts are large
            return futures.pop(index).result()

        ensure(0)  # the first parts on their way before the look-ups below
        ensure(1)
        held = self._held_files(delta)
        group: list[tuple[ObjectId, bytes]] = []
        group_bytes = 0
        try:
            for entry, payload in delta.entries(read_part):
                self.report.delta_objects += 1
                self.tracker.add_object(entry.kind is ObjectType.FILE)
                small = self._take_delta_object(entry, payload, name, held)
                if small is not None:
                    group.append((entry.object_id, small))
                    group_bytes += len(small)
                    if len(group) >= GROUP or group_bytes >= _GROUP_BYTES:
                        self._submit_payloads(group)
                        group, group_bytes = [], 0
            self._submit_payloads(group)
        finally:
            _settle(list(futures.values()))
            for future in futures.values():  # spooled, never read
                if future.done() and not future.cancelled() and future.exception() is None:
                    future.result().close()

    def _spool_part(self, relpath: str, size: int) -> BinaryIO:
        """A delta part, read into memory (up to _PART_IN_MEMORY) or streamed to an
        unlinked file in the repository's tmp/, and refused as soon as it runs past the
        ``size`` its superblock declares (F5: parts were read whole into memory, up to
        max_object_size each)."""

        def spool(body: BinaryIO) -> BinaryIO:
            if limit <= _PART_IN_MEMORY:  # read(n) fills one bytes object straight from
                return io.BytesIO(body.read(limit))  # the socket; BytesIO shares it
            # read back through a large buffer: the objects lie one after the other, so
            # most are a copy out of it, not an lseek and a read each (system calls that
            # hand the interpreter over to the writer threads, then wait to get it back)
            out = temporary_file(self._spool_dir, buffering=_PART_BUFFER)
            try:
                # a full disk is no network error (the fetcher would fetch the part again)
                with space_errors("nothing was committed"):
                    while chunk := body.read(1 << 20):  # shutil's copyfileobj, not its imports
                        out.write(chunk)
                    out.flush()  # its buffer's last MiB, written here and not when read
            except BaseException:
                with contextlib.suppress(OSError):  # its flush fails too on a full disk
                    out.close()
                raise
            return out

        limit = min(size, self.settings.max_object_size)
        try:  # pipelined (a lane of one request): the per-object path's urllib3, http.client
            # and email cost an update pull's delta ~30 ms of imports before its part came
            [(_, part)] = list(self.fetcher.fetch_many([relpath], limit, lambda _, b: spool(b)))
            return part
        except NetworkError as exc:
            if exc.status == 404:
                raise ObjectMissingError(
                    f"{self.where}: delta part not found ({exc.url}: HTTP 404)"
                ) from None
            raise

    def _held_files(self, delta: formats.Delta) -> set[ObjectId]:
        """The delta's file objects this repository holds, looked up before any is
        stored: one look-up after another in the applying thread, between submits, had
        it wait for the interpreter's lock after each (LMDB's get lets it go)."""
        with self.repo.index.reader() as reader:
            return {
                entry.object_id
                for entry in delta.superblock.entries
                if entry.kind is ObjectType.FILE and reader.has_object(entry.object_id)
            }

    def _submit_payloads(self, group: list[tuple[ObjectId, bytes]]) -> None:
        """Queue small file objects for the batch writer, as one piece of work: a
        submit an object woke a writer thread an object (the lock handed over each time)."""
        if group:
            assert self.batches is not None
            self.batches.submit(partial(self._store_payloads, group), weight=len(group))

    def _take_delta_object(
        self, entry: DeltaEntry, payload: BinaryIO, name: str, held: set[ObjectId]
    ) -> bytes | None:
        """Verify a delta's object: metadata is kept for the walk; a small file object
        not held or queued yet is returned (as bytes) for the caller to queue; a large
        one is decoded here into its own spool (memory never holds it whole) and queued."""
        assert self.batches is not None
        object_id, kind, length = entry.object_id, entry.kind, entry.length
        where = f"{self.where}: delta {name}"
        if kind is not ObjectType.FILE:
            if length > self.settings.max_metadata_size:
                raise CorruptObjectError(
                    f"{where}: {kind.suffix} object {object_id.hex()} of {length} bytes, "
                    f"more than the {self.settings.max_metadata_size} allowed",
                    object_id=object_id,
                )
            self.from_delta[object_id] = (
                kind,
                verified_meta(object_id, kind, payload.read(length), where),
            )
        elif object_id not in self.queued and object_id not in held:
            self.queued.add(object_id)
            if length <= _INLINE_PAYLOAD:
                return payload.read(length)
            content = decoded_filez(
                payload, object_id, self.settings.max_object_size, self._spool_dir
            )
            self.batches.submit(partial(self._store_content, object_id, content))
        return None

    def _store_content(
        self, object_id: ObjectId, content: DecodedContent, txn: Transaction
    ) -> None:
        try:
            content.store(txn, object_id, self.repo.mode)
        finally:
            content.close()

    def _store_payloads(self, group: list[tuple[ObjectId, bytes]], txn: Transaction) -> None:
        for object_id, payload in group:
            content = decoded_filez(
                io.BytesIO(payload), object_id, self.settings.max_object_size, self._spool_dir
            )
            try:
                content.store(txn, object_id, self.repo.mode)
            finally:
                content.close()
            if self.batches is not None and self.batches.stopped:
                raise Stopped  # a failure elsewhere, or a Ctrl-C: not the group's end (attack15 2)
