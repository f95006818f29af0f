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

This module holds steps 1 and 6 and the order; step 2 is store.pull.checks, step 3
store.pull.delta_apply, steps 4 and 5 store.pull.walk, the state and fetching they
share store.pull.job, the progress and report store.pull.progress.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING

from store.errors import (
    FormatError,
    InvalidRefNameError,
    ModePolicyError,
    RefConflictError,
    RefNotFoundError,
    UsageError,
)
from store.ids import ObjectId, ObjectType
from store.names import check_ref_name
from store.objects import Commit, DirMeta, DirTree, MetaObject
from store.pull import formats
from store.pull.batches import Batches
from store.pull.checks import _Checks
from store.pull.delta_apply import _Deltas
from store.pull.job import _Wanted
from store.pull.progress import ProgressCallback, PullProgress, PullReport, _Tracker
from store.pull.remotes import Remote, get_remote
from store.pull.settings import FetchSettings
from store.pull.walk import _has_partial_commits, _Walk
from store.repo import Repository
from store.transaction import Transaction

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from store.pull.http import Fetcher

__all__ = ["ProgressCallback", "PullProgress", "PullReport", "pull"]


def pull(
    repo: Repository,
    remote: Remote | str,
    refs: str | Sequence[str] = (),
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
    ``allow_downgrade``. A single str is one ref, not its letters."""
    if isinstance(refs, str):
        refs = (refs,)
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


class _Pull(_Checks, _Deltas, _Walk):
    """One pull: its steps, in order (see the module's docstring)."""

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
        self.previous: dict[ObjectId, ObjectId] = {}  # see _Walk._pair_with_held
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
            if not self.thorough:
                self._pair_with_held(wanted)
            self._walk_trees(roots)  # content is fetched as it is found
            self.report.content_missing = len(self.missing_files)
            self.tracker.content_total = len(self.missing_files)
            if self.batches is not None:
                self.tracker.phase("content")
                moves = [want for want in wanted if want.old != want.new]
                writes = moves or self.commits or self.signatures or self.trees or self.metas
                # the last batch's transaction writes the metadata and moves the refs:
                # one commit point fewer (a small update has nothing but that one)
                try:
                    self.batches.finish(partial(self._finish, moves) if writes else None)
                except RefConflictError:
                    if not moves or not self._moved_there_meanwhile(moves):
                        raise
                self.report.content_fetched = len(self.missing_files)
            for want in wanted:
                self.report.refs[want.local] = (want.old, want.new)
            return self.report
        except BaseException:
            self.fetcher.halt()  # fetches still running end now (attack14.md 5, 6)
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

    # ----- the end -----------------------------------------------------------------------
    def _merge_signatures(self, txn: Transaction, commit_id: ObjectId, fetched: bytes) -> None:
        """Add the remote's signatures of a commit to those the repository holds (its
        own, a mirror's: kept, attack23 13); a compare-and-swap of what was read, so a
        signer meanwhile is a RefConflictError, not a signature lost. Nothing is
        written when they add nothing."""
        from store.signing import merge_signatures  # here: PyNaCl for signed commits only

        commit = self.commits.get(commit_id) or self.repo.read_commit(commit_id)
        with self.repo.index.reader() as reader:
            current = reader.commitmeta(commit_id)
        merged = merge_signatures(current, fetched, commit.encode())
        if merged != current:
            txn.set_commitmeta(commit_id, merged, expected=current)

    def _moved_there_meanwhile(self, moves: list[_Wanted]) -> bool:
        """Whether another pull (a cron job's, say) moved every ref this one moves to the
        very commit this one brings while it ran: then the refs are where this pull was
        taking them, and its refused compare-and-swap is no failure (attack24 1)."""
        if any(self.repo.ref(want.local) != want.new for want in moves):
            return False
        log.info("%s: %s moved there meanwhile", self.where, ", ".join(w.local for w in moves))
        return True

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
            self._merge_signatures(txn, commit_id, signatures)
        for want in moves:
            txn.set_ref(want.local, want.new, expected=want.old)
