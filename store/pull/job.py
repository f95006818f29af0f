"""The state a pull keeps while it runs, shared by its steps (store.pull.checks,
store.pull.delta_apply, store.pull.walk, store.pull.pull), and the fetching every
step uses: a 404 becomes ObjectMissingError, many requests run in flight."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from store.content import object_relpath
from store.errors import NetworkError, ObjectMissingError
from store.ids import ObjectId, ObjectType
from store.objects import Commit, DirMeta, DirTree, MetaObject
from store.pull.batches import Batches
from store.pull.objects import check_meta_digest
from store.pull.progress import PullReport, _Tracker
from store.pull.remotes import Remote
from store.pull.settings import FetchSettings
from store.record import Value
from store.repo import Repository

if TYPE_CHECKING:
    from store.pull.http import Fetcher

_T = TypeVar("_T")
GROUP = 64  # objects fetched in one piece of work, pipelined on one connection


def _read_all(index: int, body: BinaryIO) -> bytes:
    return body.read()


class _Wanted(Value):
    """A ref to pull: its remote name, local name, the commit it held, and the one wanted."""

    __slots__ = ("local", "new", "old", "ref")

    def __init__(self, ref: str, local: str, old: ObjectId | None, new: ObjectId) -> None:
        self.ref = ref
        self.local = local
        self.old = old
        self.new = new


class _Job:
    """A pull's state (set by store.pull.pull's ``_Pull``) and its fetching."""

    repo: Repository
    remote: Remote
    fetcher: Fetcher
    settings: FetchSettings
    tracker: _Tracker
    dry_run: bool
    report: PullReport
    pool: ThreadPoolExecutor
    commits: dict[ObjectId, Commit]  # fetched here, written at the end
    trees: dict[ObjectId, DirTree]
    metas: dict[ObjectId, DirMeta]
    from_delta: dict[ObjectId, tuple[ObjectType, MetaObject]]
    missing_files: dict[ObjectId, None]  # ordered set
    signatures: dict[ObjectId, bytes]  # commit -> its .commitmeta
    queued: set[ObjectId]  # content objects stored or being stored
    thorough: bool  # walk held dirtrees too: the repository has partial commits
    walked_held: set[ObjectId]  # held dirtrees walked (thorough only)
    previous: dict[ObjectId, ObjectId]  # a dirtree to walk -> the held one at its path
    allow_downgrade: bool
    batches: Batches | None
    _meta_pool: ThreadPoolExecutor | None = None  # see _metadata_pool
    _meta_stop: threading.Event
    where: str

    # ----- fetching --------------------------------------------------------------------
    def _get(self, relpath: str, limit: int, what: str) -> bytes:
        """A file of the remote; ObjectMissingError naming ``what`` for a 404."""
        try:
            [(_, data)] = list(self.fetcher.fetch_many([relpath], limit, _read_all))
            return data
        except NetworkError as exc:
            if exc.status == 404:
                raise ObjectMissingError(
                    f"{self.where}: {what} not found ({exc.url}: HTTP 404)"
                ) from None
            raise

    def _get_object(self, object_id: ObjectId, kind: ObjectType) -> bytes:
        """A metadata object's bytes, hashed as they come (see :meth:`_get_objects`)."""
        [data] = self._get_objects([object_id], kind)
        return data

    def _get_objects(
        self, ids: list[ObjectId], kind: ObjectType, stop: threading.Event | None = None
    ) -> list[bytes]:
        """Metadata objects' bytes, hashed as they come: the fetcher asks anew on a new
        connection for bytes that are not the object (a server out of step with the
        requests); the caller decodes them. _GroupStopped between two objects once
        ``stop`` is set."""

        def checked(object_id: ObjectId, body: BinaryIO) -> bytes:
            data = body.read(self.settings.max_metadata_size + 1)
            check_meta_digest(object_id, kind, data, self.where)
            self.tracker.add_object()
            return data

        found = []
        with contextlib.closing(self._fetch_objects(ids, kind, checked)) as fetched:
            for _, data in fetched:
                found.append(data)
                if stop is not None and stop.is_set():
                    raise _GroupStopped
        return found

    def _fetch_objects(
        self,
        ids: list[ObjectId],
        kind: ObjectType,
        consume: Callable[[ObjectId, BinaryIO], _T],
    ) -> Generator[tuple[ObjectId, _T], None, None]:
        """``(id, consume(id, body))`` for each object of ``ids``, in order, pipelined
        on one connection (Fetcher.fetch_many); ObjectMissingError for a 404. The
        caller closes the iterator (contextlib.closing) if it stops early."""
        if kind is ObjectType.FILE:
            limit = self.settings.max_object_size
            relpaths = ["objects/" + object_relpath(oid, kind, compressed=True) for oid in ids]
        else:
            limit = self.settings.max_metadata_size
            relpaths = ["objects/" + object_relpath(oid, kind) for oid in ids]
        done = 0
        fetched = self.fetcher.fetch_many(relpaths, limit, lambda i, body: consume(ids[i], body))
        try:
            for _, result in fetched:
                yield ids[done], result
                done += 1
        except NetworkError as exc:
            if exc.status == 404:
                raise ObjectMissingError(
                    f"{self.where}: {kind.suffix} object {ids[done].hex()} is missing "
                    f"({exc.url}: HTTP 404)",
                    object_id=ids[done],
                ) from None
            raise
        finally:
            fetched.close()

    def _get_spread(self, ids: list[ObjectId], kind: ObjectType) -> Iterator[bytes]:
        """The bytes of every metadata object of ``ids``, in order: in groups, each
        pipelined by one thread of the metadata pool (see :meth:`_metadata_pool`)."""
        pool = self._metadata_pool()
        stop = self._meta_stop
        size = max(1, min(GROUP, -(-len(ids) // self._metadata_workers)))
        groups = [ids[start : start + size] for start in range(0, len(ids), size)]
        futures = [pool.submit(self._get_objects, group, kind, stop) for group in groups]
        try:
            for future in futures:
                yield from future.result()
        except BaseException:  # the walk fails: running groups stop after their object,
            stop.set()  # and one blocked on the network at once
            self.fetcher.halt()
            raise
        finally:
            _settle(futures)

    def _metadata_pool(self) -> ThreadPoolExecutor:
        """Threads of their own for the trees' levels (half as many as connections): in
        the pool, a level waited behind the content work queued before it (up to
        ``4 x connections`` pieces of 64 objects), and the walk, which finds that work,
        stalled. They fetch on the pull's connections, not on more (store/pull/
        budget.py): a group waits at most for a running piece's slot. Shut down by
        :meth:`_stop_metadata_pool`."""
        pool = self._meta_pool
        if pool is None:
            pool = ThreadPoolExecutor(self._metadata_workers, thread_name_prefix="pull-meta")
            self._meta_pool = pool
            self._meta_stop = threading.Event()
        return pool

    @property
    def _metadata_workers(self) -> int:
        return max(1, self.settings.connections // 2)

    def _stop_metadata_pool(self) -> None:
        pool = self._meta_pool
        if pool is not None:
            self._meta_stop.set()  # a group still running stops after its object
            self._meta_pool = None
            pool.shutdown(wait=True, cancel_futures=True)

    @property
    def _spool_dir(self) -> str:
        return str(self.repo.path / "tmp")


class _GroupStopped(Exception):
    """A group of metadata objects left unfinished: the walk stopped (never raised to
    a caller: its future is not waited on for a result)."""


def _settle(futures: list[Future[_T]]) -> None:
    """Cancel what has not started; wait for what runs."""
    for future in futures:
        future.cancel()
    wait(futures)
