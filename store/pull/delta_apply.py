"""Step 3 of a pull (see store.pull.pull): a static delta, when one leads to a
wanted commit, applied: its parts spooled two at a time, its objects verified one by
one exactly as single objects are; content is stored, metadata kept for the walk."""

from __future__ import annotations

import io
import shutil
import tempfile
from concurrent.futures import Future
from functools import partial
from typing import BinaryIO

from store.errors import CorruptObjectError, NetworkError, ObjectMissingError
from store.ids import ObjectId, ObjectType
from store.pull import formats
from store.pull.job import _Job, _settle, _Wanted
from store.pull.objects import DecodedContent, decoded_filez, verified_meta
from store.transaction import Transaction

_INLINE_PAYLOAD = 1 << 20  # a delta's file object up to this size goes to the writer as bytes


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

        try:
            for entry, payload in delta.entries(read_part):
                self.report.delta_objects += 1
                self.tracker.add_object(entry.kind is ObjectType.FILE)
                self._take_delta_object(entry.object_id, entry.kind, entry.length, payload, name)
        finally:
            _settle(list(futures.values()))
            for future in futures.values():  # spooled, never read
                if future.done() and not future.cancelled() and future.exception() is None:
                    future.result().close()

    def _spool_part(self, relpath: str, size: int) -> BinaryIO:
        """A delta part, streamed to an unlinked file in the repository's tmp/ and
        refused as soon as it runs past the ``size`` its superblock declares (F5: parts
        were read whole into memory, up to max_object_size each)."""

        def spool(body: BinaryIO) -> BinaryIO:
            out = tempfile.TemporaryFile(dir=self._spool_dir)  # noqa: SIM115
            try:
                shutil.copyfileobj(body, out, 1 << 20)
            except BaseException:
                out.close()
                raise
            return out

        try:
            return self.fetcher.fetch(relpath, min(size, self.settings.max_object_size), spool)
        except NetworkError as exc:
            if exc.status == 404:
                raise ObjectMissingError(
                    f"{self.where}: delta part not found ({exc.url}: HTTP 404)"
                ) from None
            raise

    def _take_delta_object(
        self, object_id: ObjectId, kind: ObjectType, length: int, payload: BinaryIO, name: str
    ) -> None:
        """Verify a delta's object: metadata is kept for the walk; a file object is
        queued for the batch writer (as bytes when small; a large one is decoded here
        into its own spool, so that memory never holds it whole)."""
        assert self.batches is not None
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
        elif object_id not in self.queued and not self.repo.has_object(object_id):
            self.queued.add(object_id)
            if length <= _INLINE_PAYLOAD:
                self.batches.submit(partial(self._store_payload, object_id, payload.read(length)))
                return
            content = decoded_filez(
                payload, object_id, self.settings.max_object_size, self._spool_dir
            )
            self.batches.submit(partial(self._store_content, object_id, content))

    def _store_content(
        self, object_id: ObjectId, content: DecodedContent, txn: Transaction
    ) -> None:
        try:
            content.store(txn, object_id, self.repo.mode)
        finally:
            content.close()

    def _store_payload(self, object_id: ObjectId, payload: bytes, txn: Transaction) -> None:
        content = decoded_filez(
            io.BytesIO(payload), object_id, self.settings.max_object_size, self._spool_dir
        )
        try:
            content.store(txn, object_id, self.repo.mode)
        finally:
            content.close()
