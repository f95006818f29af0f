"""Pull: bring commits of a remote archive repository into a local repository.

The order of work, and why:

1. ``summary`` (and ``summary.sig`` when the remote requires signatures): the refs on
   offer, their commits, and the static deltas.
2. Each wanted commit (and ``depth`` parents): fetched, hashed, decoded; with
   sign-verify its ``.commitmeta`` is fetched and checked against the trusted keys
   before anything of its tree is asked for. A ``REMOTE:REF`` that exists is not
   moved to a commit with an older timestamp (a replayed old summary) unless
   ``allow_downgrade``.
3. A static delta, when one leads from the commit the local ``REMOTE:REF`` holds (or
   from nothing) to the wanted one: its objects are verified one by one, exactly as
   single objects are; content is stored, metadata kept for step 4.
4. The trees, level by level, many requests in flight: a dirtree the local repository
   holds stands for its whole subtree (a dirtree enters an index only with everything
   below it), so it is not walked; what is missing is fetched and verified. Unless
   fsck --delete left commits partial: then held dirtrees are walked too (read
   locally), so that what it deleted below them is fetched again.
5. The missing content objects, many in flight, each verified as it arrives and stored
   in batches of ``settings.batch_objects``: a batch moves no ref, so an interrupted
   pull keeps them and the next one does not fetch them again.
6. One transaction writes the dirtrees, dirmetas and commits and moves every
   ``REMOTE:REF`` by compare-and-swap: a ref moves only when its commit's whole tree
   is present (the transaction's commit point checks every object a new tree names).

Nothing is printed: ``progress`` receives :class:`PullProgress` values.
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from store.content import object_relpath
from store.errors import (
    CorruptObjectError,
    DowngradeError,
    FormatError,
    InvalidRefNameError,
    ModePolicyError,
    NetworkError,
    ObjectMissingError,
    RefNotFoundError,
    SignatureError,
    SignedDowngradeError,
    UsageError,
)
from store.ids import ObjectId, ObjectType
from store.names import check_ref_name
from store.objects import Commit, DirMeta, DirTree, MetaObject
from store.pull import formats
from store.pull.batches import Batches
from store.pull.objects import DecodedContent, decoded_filez, verified_meta
from store.pull.remotes import Remote, get_remote
from store.pull.settings import FetchSettings
from store.repo import Repository
from store.transaction import Transaction

if TYPE_CHECKING:
    from store.pull.http import Fetcher

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_PROGRESS_EVERY = 0.1  # seconds between two progress reports
_INLINE_PAYLOAD = 1 << 20  # a delta's file object up to this size goes to the writer as bytes


@dataclass(frozen=True)
class PullProgress:
    """Where a pull is: ``phase`` ("summary", "commits", "delta", "trees", "content",
    "writing", "done"), objects and bytes fetched so far, and the content objects to
    fetch (None until the trees are walked)."""

    phase: str
    objects: int
    bytes: int
    content_total: int | None
    content_done: int
    elapsed: float


@dataclass
class PullReport:
    """What a pull did (or, with ``dry_run``, would do).

    ``refs``: each local ref name -> (the commit it held before or None, the commit it
    holds now or would hold); ``metadata_fetched`` and ``content_fetched``: objects
    fetched one by one; ``content_missing``: content objects the local repository
    lacked (the dry run's "would fetch"); ``delta_objects``: objects that came in
    static deltas (``deltas``: which, as "FROM-TO" or "TO"); ``bytes``: bytes read
    from the network (pull-local: content bytes copied or linked); ``requests``: HTTP
    requests made; ``linked``: content objects pull-local hardlinked."""

    remote: str
    dry_run: bool
    refs: dict[str, tuple[ObjectId | None, ObjectId]] = field(default_factory=dict)
    commits_fetched: int = 0
    metadata_fetched: int = 0
    content_fetched: int = 0
    content_missing: int = 0
    delta_objects: int = 0
    deltas: list[str] = field(default_factory=list)
    bytes: int = 0
    requests: int = 0
    linked: int = 0

    @property
    def changed(self) -> dict[str, tuple[ObjectId | None, ObjectId]]:
        """The refs that moved (or would move)."""
        return {name: (old, new) for name, (old, new) in self.refs.items() if old != new}


ProgressCallback = Callable[[PullProgress], None]


def pull(
    repo: Repository,
    remote: Remote | str,
    refs: Sequence[str] = (),
    *,
    depth: int = 0,
    dry_run: bool = False,
    settings: FetchSettings | None = None,
    progress: ProgressCallback | None = None,
    allow_downgrade: bool = False,
) -> PullReport:
    """Pull ``refs`` of ``remote`` (every ref its summary offers if none) into ``repo``
    as ``REMOTE:REF``, with ``depth`` parents of each; see the module's docstring.
    An existing ``REMOTE:REF`` is never moved to a commit older than its own
    (DowngradeError, SignedDowngradeError from a sign-verify remote) unless
    ``allow_downgrade``."""
    if isinstance(remote, str):
        remote = get_remote(repo.path, remote)
    if depth < 0:
        raise UsageError(f"depth {depth}: give 0 or more parents")
    if not dry_run:
        repo.mode.require_privileges()
        repo.require_writable()
    settings = settings or FetchSettings()
    tracker = _Tracker(progress)
    from store.pull.http import Fetcher  # here: importing urllib3 is for pulls alone

    with Fetcher(remote.url, settings, tracker.add_bytes) as fetcher:
        job = _Pull(repo, remote, fetcher, settings, tracker, dry_run, allow_downgrade)
        report = job.run(refs, depth)
        report.bytes, report.requests = fetcher.bytes, fetcher.requests
    tracker.phase("done", force=True)
    return report


class _Tracker:
    """Counts for progress reports; called from every fetching thread."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last = 0.0
        self._phase = "summary"
        self.objects = 0
        self.bytes = 0
        self.content_total: int | None = None
        self.content_done = 0

    def add_bytes(self, count: int) -> None:
        with self._lock:
            self.bytes += count
        self._report()

    def add_object(self, content: bool = False) -> None:
        with self._lock:
            self.objects += 1
            self.content_done += content
        self._report()

    def phase(self, name: str, force: bool = True) -> None:
        self._phase = name
        self._report(force)

    def _report(self, force: bool = False) -> None:
        if self._callback is None:
            return
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last < _PROGRESS_EVERY:
                return
            self._last = now
            status = PullProgress(
                self._phase,
                self.objects,
                self.bytes,
                self.content_total,
                self.content_done,
                now - self._start,
            )
            self._callback(status)


@dataclass
class _Wanted:
    """A ref to pull: its remote name, local name, the commit it held, and the one wanted."""

    ref: str
    local: str
    old: ObjectId | None
    new: ObjectId


class _Pull:
    def __init__(
        self,
        repo: Repository,
        remote: Remote,
        fetcher: Fetcher,
        settings: FetchSettings,
        tracker: _Tracker,
        dry_run: bool,
        allow_downgrade: bool = False,
    ) -> None:
        self.repo = repo
        self.remote = remote
        self.fetcher = fetcher
        self.settings = settings
        self.tracker = tracker
        self.dry_run = dry_run
        self.report = PullReport(remote.name, dry_run)
        self.pool = ThreadPoolExecutor(settings.connections, thread_name_prefix="pull")
        self.commits: dict[ObjectId, Commit] = {}  # fetched here, written at the end
        self.trees: dict[ObjectId, DirTree] = {}
        self.metas: dict[ObjectId, DirMeta] = {}
        self.from_delta: dict[ObjectId, tuple[ObjectType, MetaObject]] = {}
        self.missing_files: dict[ObjectId, None] = {}  # ordered set
        self.signatures: dict[ObjectId, bytes] = {}  # commit -> its .commitmeta
        self.queued: set[ObjectId] = set()  # content objects stored or being stored
        self.thorough = False  # walk held dirtrees too: the repository has partial commits
        self.walked_held: set[ObjectId] = set()  # held dirtrees walked (thorough only)
        self.allow_downgrade = allow_downgrade
        self.batches = (
            None
            if dry_run
            else Batches(repo, self.pool, settings.batch_objects, 4 * settings.connections)
        )
        self.where = f"remote {remote.name}"

    # ----- the steps -------------------------------------------------------------------
    def run(self, refs: Sequence[str], depth: int) -> PullReport:
        try:
            wanted, offered = self._resolve(refs)
            self.tracker.phase("commits")
            roots: list[ObjectId] = []
            for want in wanted:
                roots += self._commit_chain(want.new, depth)
            for want in wanted:
                self._refuse_downgrade(want)  # before any of the trees is fetched
            if not self.dry_run:
                for want in wanted:
                    self._use_delta(want, offered)
            self.tracker.phase("trees")
            self.thorough = _has_partial_commits(self.repo)
            self._walk_trees(roots)  # content is fetched as it is found
            self.report.content_missing = len(self.missing_files)
            self.tracker.content_total = len(self.missing_files)
            if self.batches is not None:
                self.tracker.phase("content")
                moves = [want for want in wanted if want.old != want.new]
                writes = moves or self.commits or self.signatures or self.trees or self.metas
                # the last batch's transaction writes the metadata and moves the refs:
                # one commit point fewer (a small update has nothing but that one)
                self.batches.finish(partial(self._finish, moves) if writes else None)
                self.report.content_fetched = len(self.missing_files)
            for want in wanted:
                self.report.refs[want.local] = (want.old, want.new)
            return self.report
        except BaseException:
            if self.batches is not None:
                self.batches.abandon()
            raise
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _resolve(
        self, refs: Sequence[str]
    ) -> tuple[list[_Wanted], dict[tuple[ObjectId | None, ObjectId], bytes]]:
        data = self._get("summary", self.settings.max_metadata_size, "summary")
        if self.remote.sign_verify:
            self._verify_summary(data)
        try:
            summary = formats.read_summary(data)
        except FormatError as exc:
            raise FormatError(f"{self.where}: the summary is not valid: {exc}") from None
        for name in summary.refs:
            try:
                check_ref_name(f"{self.remote.name}:{name}")
            except InvalidRefNameError:
                raise FormatError(
                    f"{self.where}: the summary names an invalid ref {name[:80]!r}"
                ) from None
        names = list(dict.fromkeys(refs)) if refs else sorted(summary.refs)
        wanted = []
        for name in names:
            check_ref_name(name)
            if name not in summary.refs:
                raise RefNotFoundError(f"{self.where} has no ref {name}", rev=name)
            local = f"{self.remote.name}:{name}"
            wanted.append(_Wanted(name, local, self.repo.ref(local), summary.refs[name]))
        return wanted, summary.deltas

    def _verify_summary(self, data: bytes) -> None:
        try:
            sig = self._get("summary.sig", self.settings.max_metadata_size, "summary signature")
        except ObjectMissingError:
            raise SignatureError(
                f"{self.where}: the summary is unsigned, and this remote requires signatures"
            ) from None
        try:
            key = formats.verify(data, sig, self.remote.trusted_keys)
        except FormatError as exc:
            raise SignatureError(f"{self.where}: summary.sig is not valid: {exc}") from None
        if key is None:
            raise SignatureError(f"{self.where}: the summary is signed by no trusted key")

    def _commit_chain(self, head: ObjectId, depth: int) -> list[ObjectId]:
        """The commits to walk: ``head`` and up to ``depth`` parents, fetched (and their
        signatures checked) unless the local repository holds them whole."""
        roots = []
        commit_id: ObjectId | None = head
        for level in range(depth + 1):
            if commit_id is None:
                break
            commit = self._commit(commit_id, required=level == 0)
            if commit is None:
                break
            if commit_id in self.commits:
                roots.append(commit_id)
            commit_id = commit.parent
        return roots

    def _commit(self, commit_id: ObjectId, required: bool) -> Commit | None:
        local = self.repo.has_object(commit_id) and not self.repo.is_partial(commit_id)
        if local and not self.remote.sign_verify:
            return self.repo.read_commit(commit_id)
        if commit_id in self.commits:
            return self.commits[commit_id]
        try:
            data = self._get_object(commit_id, ObjectType.COMMIT)
        except ObjectMissingError:
            if required:
                raise
            log.info("%s: parent commit %s is not there; history ends", self.where, commit_id.hex())
            return None
        commit = verified_meta(commit_id, ObjectType.COMMIT, data, self.where)
        assert isinstance(commit, Commit)
        self._signatures(commit_id, data)
        if not local:
            self.commits[commit_id] = commit
            self.report.commits_fetched += 1
        return commit

    def _signatures(self, commit_id: ObjectId, data: bytes) -> None:
        """Fetch the commit's detached signatures (kept with it in the local repository);
        with sign-verify, refuse it unless one is by a trusted key."""
        relpath = "objects/" + object_relpath(commit_id, ObjectType.COMMIT) + "meta"
        try:
            meta = self._get(relpath, self.settings.max_metadata_size, "commit signatures")
        except ObjectMissingError:
            if self.remote.sign_verify:
                raise SignatureError(
                    f"{self.where}: commit {commit_id.hex()} is unsigned, and this remote "
                    "requires signatures",
                    commit_id=commit_id,
                ) from None
            return
        try:
            key = formats.verify(data, meta, self.remote.trusted_keys)
        except FormatError as exc:
            raise SignatureError(
                f"{self.where}: commit {commit_id.hex()}: its signatures are not valid: {exc}",
                commit_id=commit_id,
            ) from None
        if self.remote.sign_verify and key is None:
            raise SignatureError(
                f"{self.where}: commit {commit_id.hex()} is signed by no trusted key",
                commit_id=commit_id,
            )
        self.signatures[commit_id] = meta

    def _refuse_downgrade(self, want: _Wanted) -> None:
        """DowngradeError if ``want`` moves its ref to a commit older than the one it
        holds: a replayed old summary (signed or not) must not roll a machine back."""
        if want.old is None or want.old == want.new or self.allow_downgrade:
            return
        current = self.repo.read_commit(want.old).timestamp
        offered_commit = self.commits.get(want.new) or self.repo.read_commit(want.new)
        offered = offered_commit.timestamp
        if offered >= current:
            return
        error = SignedDowngradeError if self.remote.sign_verify else DowngradeError
        raise error(
            f"{self.where}: would move {want.local} back from commit {want.old.hex()[:12]} "
            f"({_when(current)}) to the older {want.new.hex()[:12]} ({_when(offered)}); "
            "nothing was pulled: an older commit is taken only when downgrades are allowed",
            ref=want.local,
            current=want.old,
            offered=want.new,
            current_time=current,
            offered_time=offered,
        )

    # ----- static deltas -----------------------------------------------------------------
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

    @property
    def _spool_dir(self) -> str:
        return str(self.repo.path / "tmp")

    # ----- trees -------------------------------------------------------------------------
    def _walk_trees(self, roots: Iterable[ObjectId]) -> None:
        level: list[ObjectId] = []
        metas: list[ObjectId] = []
        for commit_id in roots:
            commit = self.commits[commit_id]
            level.append(commit.tree)
            metas.append(commit.meta)
        while level or metas:
            trees = self._fetch_metadata(ObjectType.DIRTREE, level)
            self._fetch_metadata(ObjectType.DIRMETA, metas)
            level, metas, files = [], [], []
            for tree in trees:
                files += [file_id for _, file_id in tree.files]
                for _, entry in tree.dirs:
                    level.append(entry.tree)
                    metas.append(entry.meta)
            self._note_missing_files(files)

    def _fetch_metadata(self, kind: ObjectType, ids: list[ObjectId]) -> list[DirTree]:
        """Fetch the objects of ``ids`` that are neither here nor fetched already; the
        dirtrees fetched (the ones whose children are to be walked), and when
        ``thorough`` the held ones not walked yet too (read here, not fetched)."""
        known: dict[ObjectId, MetaObject] = self.trees if kind is ObjectType.DIRTREE else self.metas  # type: ignore[assignment]
        todo: list[ObjectId] = []
        held: list[ObjectId] = []
        with self.repo.snapshot() as snap:
            for oid in dict.fromkeys(ids):
                if oid not in known:
                    (held if snap.has_object(oid) else todo).append(oid)
        found: list[DirTree] = []
        if kind is ObjectType.DIRTREE and self.thorough:
            found += self._held_trees(held)
        remote = [oid for oid in todo if oid not in self.from_delta]
        for oid in todo:
            if oid in self.from_delta:
                delta_kind, meta = self.from_delta[oid]
                if delta_kind is not kind:
                    raise CorruptObjectError(
                        f"{self.where}: object {oid.hex()} came in a delta as a "
                        f"{delta_kind.suffix}, but is named as a {kind.suffix}",
                        object_id=oid,
                    )
                known[oid] = meta
        for oid, data in zip(
            remote, self._map(lambda o: self._get_object(o, kind), remote), strict=True
        ):
            known[oid] = verified_meta(oid, kind, data, self.where)
            self.report.metadata_fetched += 1
        for oid in todo:
            meta = known[oid]
            if isinstance(meta, DirTree):
                found.append(meta)
        return found

    def _held_trees(self, ids: list[ObjectId]) -> list[DirTree]:
        """The held dirtrees of ``ids`` not walked yet: after fsck --delete a held
        dirtree no longer stands for its whole subtree, so a commit written (and its
        partial mark cleared) must have had every tree below it walked."""
        trees = []
        for oid in ids:
            if oid not in self.walked_held:
                self.walked_held.add(oid)
                trees.append(self.repo.read_dirtree(oid))
        return trees

    def _note_missing_files(self, files: list[ObjectId]) -> None:
        """Queue the content objects of ``files`` that are neither here nor queued."""
        with self.repo.snapshot() as snap:
            missing = [
                file_id
                for file_id in dict.fromkeys(files)
                if file_id not in self.queued and not snap.has_object(file_id)
            ]
        for file_id in missing:
            self.queued.add(file_id)
            self.missing_files[file_id] = None
            if self.batches is not None:
                self.batches.submit(partial(self._fetch_file, file_id))

    # ----- content -----------------------------------------------------------------------
    def _fetch_file(self, object_id: ObjectId, txn: Transaction) -> None:
        relpath = "objects/" + object_relpath(object_id, ObjectType.FILE, compressed=True)
        content = self._fetch_object(
            relpath,
            object_id,
            ObjectType.FILE,
            lambda body: decoded_filez(
                body, object_id, self.settings.max_object_size, self._spool_dir
            ),
        )
        try:
            content.store(txn, object_id, self.repo.mode)
        finally:
            content.close()
        self.tracker.add_object(content=True)

    # ----- the end -----------------------------------------------------------------------
    def _finish(self, moves: list[_Wanted], txn: Transaction) -> None:
        """Write the trees, commits and signatures, and move the refs, in ``txn``."""
        self.tracker.phase("writing")
        for meta_id, meta in self.metas.items():
            where = f"dirmeta {meta_id.hex()}"
            if self.repo.mode.admit_dir(meta, where) != meta:
                raise ModePolicyError(
                    f"{where} carries ownership or xattrs, which a {self.repo.mode.value} "
                    "repository does not keep: it cannot hold this commit as it is",
                    path=where,
                )
            txn.write_dirmeta(meta, where)
        for tree in self.trees.values():
            txn.write_dirtree(tree)
        for commit in sorted(self.commits.values(), key=lambda c: c.timestamp):
            txn.write_commit(commit)
        for commit_id, signatures in self.signatures.items():
            txn.set_commitmeta(commit_id, signatures)
        for want in moves:
            txn.set_ref(want.local, want.new, expected=want.old)

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
        relpath = "objects/" + object_relpath(object_id, kind)
        data = self._fetch_object(
            relpath, object_id, kind, lambda body: body.read(self.settings.max_metadata_size + 1)
        )
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


def _when(timestamp: int) -> str:
    """A commit's timestamp as a UTC date (the number itself if out of range)."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))
    except (OverflowError, OSError, ValueError):
        return str(timestamp)


def _has_partial_commits(repo: Repository) -> bool:
    """Whether fsck --delete left commits of ``repo`` partial (objects deleted below
    dirtrees that it still holds)."""
    with repo.index.reader() as reader:
        return bool(reader.partial_commits())


def _settle(futures: list[Future[_T]]) -> None:
    """Cancel what has not started; wait for what runs."""
    for future in futures:
        future.cancel()
    wait(futures)
