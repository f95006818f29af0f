"""The state a pull keeps while it runs, shared by its steps (store.pull.checks,
store.pull.delta_apply, store.pull.walk, store.pull.pull), and the fetching every
step uses: a 404 becomes ObjectMissingError, many requests run in flight."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
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
from store.repo import Repository

if TYPE_CHECKING:
    from store.pull.http import Fetcher

_T = TypeVar("_T")


@dataclass
class _Wanted:
    """A ref to pull: its remote name, local name, the commit it held, and the one wanted."""

    ref: str
    local: str
    old: ObjectId | None
    new: ObjectId


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
    allow_downgrade: bool
    batches: Batches | None
    where: str

    # ----- fetching --------------------------------------------------------------------
    def _get(self, relpath: str, limit: int, what: str) -> bytes:
        """A file of the remote; ObjectMissingError naming ``what`` for a 404."""
        try:
            return self.fetcher.get(relpath, limit)
        except NetworkError as exc:
            if exc.status == 404:
                raise ObjectMissingError(
                    f"{self.where}: {what} not found ({exc.url}: HTTP 404)"
                ) from None
            raise

    def _get_object(self, object_id: ObjectId, kind: ObjectType) -> bytes:
        """A metadata object's bytes, hashed as they come: the fetcher asks anew on a
        new connection for bytes that are not the object and came on a reused one (a
        server out of step with the requests); the caller decodes them."""

        def checked(body: BinaryIO) -> bytes:
            data = body.read(self.settings.max_metadata_size + 1)
            check_meta_digest(object_id, kind, data, self.where)
            return data

        relpath = "objects/" + object_relpath(object_id, kind)
        data = self._fetch_object(relpath, object_id, kind, checked)
        self.tracker.add_object()
        return data

    def _fetch_object(
        self, relpath: str, object_id: ObjectId, kind: ObjectType, consume: Callable[[BinaryIO], _T]
    ) -> _T:
        limit = (
            self.settings.max_object_size
            if kind is ObjectType.FILE
            else self.settings.max_metadata_size
        )
        try:
            return self.fetcher.fetch(relpath, limit, consume)
        except NetworkError as exc:
            if exc.status == 404:
                raise ObjectMissingError(
                    f"{self.where}: {kind.suffix} object {object_id.hex()} is missing "
                    f"({exc.url}: HTTP 404)",
                    object_id=object_id,
                ) from None
            raise

    def _map(self, work: Callable[[ObjectId], _T], ids: list[ObjectId]) -> Iterator[_T]:
        """``work`` of every id, in order, ``settings.connections`` at a time."""
        futures = [self.pool.submit(work, oid) for oid in ids]
        try:
            for future in futures:
                yield future.result()
        finally:
            _settle(futures)

    @property
    def _spool_dir(self) -> str:
        return str(self.repo.path / "tmp")


def _settle(futures: list[Future[_T]]) -> None:
    """Cancel what has not started; wait for what runs."""
    for future in futures:
        future.cancel()
    wait(futures)
