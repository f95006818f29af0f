"""pull-local: commits of another repository on this machine, with the same checks
as a pull over HTTP (every object verified against its id before it is stored).

Content objects are hardlinked when both repositories keep them alike (same mode,
not archive, same filesystem, the object file owned by this user: never another user's,
not even for root, since its owner could rewrite the inode afterwards),
after the source's object is verified in full (content re-hashed, what its file
records compared with its header); otherwise they are copied, and converted to this
repository's mode (archive -> bare-user, bare-user -> archive, ...) through a
transaction. Refs keep their names; each moves by compare-and-swap in the last
transaction, once its commit's whole tree is present.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path

from store.content import USER_META_XATTR, read_xattrs, user_mode_problem
from store.errors import (
    CorruptObjectError,
    FormatError,
    ModePolicyError,
    ObjectMissingError,
    RefNotFoundError,
)
from store.ids import ObjectId
from store.interrupts import interrupts_held
from store.modes import RepoMode
from store.names import check_ref_name
from store.objects import Commit, DirMeta, DirTree, FileHeader
from store.pull.progress import ProgressCallback, PullReport, _Tracker
from store.pull.walk import _has_partial_commits
from store.repo import Repository
from store.transaction import SMALL_FILE, Transaction
from store.verify import check_content

log = logging.getLogger(__name__)
_BATCH = 1000
_THREADS = 4
_READ = 1 << 20
# The source's lock is held shared while its objects are read, as a writer holds its own:
# a prune of the source waits for the pull to end (it removed objects the pull was about
# to read: an error midway). At most this long for it, where the source is another
# user's repository, whose owner may hold it exclusively for ever.
SOURCE_LOCK_WAIT = 30.0
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def pull_local(
    repo: Repository,
    source: str | os.PathLike[str],
    refs: str | Sequence[str] = (),
    *,
    progress: ProgressCallback | None = None,
) -> PullReport:
    """Bring ``refs`` of the repository at ``source`` into ``repo`` under the same names,
    with the commits' whole trees. No ``refs``: the source's own refs, those without a
    remote (what its summary offers); a pulled ``REMOTE:REF`` only when named (its
    commit is not checked against a downgrade: it would freeze the next genuine pull).
    A single str is one ref, not its letters."""
    if isinstance(refs, str):
        refs = (refs,)
    repo.mode.require_privileges()
    repo.require_writable()
    tracker = _Tracker(progress)
    with Repository.open(source) as src, _source_locked(src):
        job = _LocalPull(repo, src, tracker)
        report = job.run(refs)
    tracker.phase("done", force=True)
    return report


@contextlib.contextmanager
def _source_locked(src: Repository) -> Iterator[None]:
    """The source's lock, held shared where it can be taken: a source this user may read
    but not list (a directory of mode 0711: flock needs a descriptor of the directory)
    or on a filesystem without flock (NFS without lockd, some FUSE) is read unlocked, as
    before the lock, with a warning (review22 1). A lock held past the wait still fails."""
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(src.lock(exclusive=False, wait=SOURCE_LOCK_WAIT))
        except OSError as exc:
            if not isinstance(exc, PermissionError) and exc.errno not in _NO_FLOCK:
                raise
            log.warning(
                "%s: its lock cannot be taken (%s): read without it; a prune of it "
                "meanwhile can make this pull fail",
                src.path,
                exc.strerror,
            )
        yield


class _LocalPull:
    def __init__(self, repo: Repository, src: Repository, tracker: _Tracker) -> None:
        self.repo = repo
        self.src = src
        self.tracker = tracker
        self.report = PullReport(str(src.path), dry_run=False)
        self.commits: dict[ObjectId, Commit] = {}
        self.trees: dict[ObjectId, DirTree] = {}
        self.metas: dict[ObjectId, DirMeta] = {}
        self.files: dict[ObjectId, None] = {}
        self.thorough = _has_partial_commits(repo)  # walk held dirtrees too (see _walk)
        self.walked_held: set[ObjectId] = set()
        self.link = _can_link(src, repo)
        self.lock = threading.Lock()
        self.work = threading.Condition()  # guards working and the setting of stopping
        self.working = 0  # copies under way
        self.stopping = threading.Event()  # set once a batch failed: the pull ends

    def run(self, refs: Sequence[str]) -> PullReport:
        source_refs = self.src.refs()
        own = sorted(name for name in source_refs if ":" not in name)
        names = list(dict.fromkeys(refs)) if refs else own
        wanted: list[tuple[str, ObjectId | None, ObjectId]] = []
        for name in names:
            check_ref_name(name)
            if name not in source_refs:
                raise RefNotFoundError(f"{self.src.path}: no ref {name}", rev=name)
            wanted.append((name, self.repo.ref(name), source_refs[name]))
        self.tracker.phase("trees")
        for _, _, commit_id in wanted:
            self._add_commit(commit_id)
        self._walk()
        self.report.content_missing = len(self.files)
        self.tracker.content_total = len(self.files)
        self.tracker.phase("content")
        self._copy_content()
        self.tracker.phase("writing")
        with self.repo.transaction() as txn:
            for meta_id, meta in self.metas.items():
                _require_kept(self.repo.mode.admit_dir(meta, "") == meta, self.repo.mode, meta_id)
                txn.write_dirmeta(meta)
            for tree in self.trees.values():
                txn.write_dirtree(tree)
            for commit in self.commits.values():
                txn.write_commit(commit)
            for commit_id in dict.fromkeys([*self.commits, *(new for _, _, new in wanted)]):
                self._copy_signatures(txn, commit_id)
            for name, old, new in wanted:
                if old != new:
                    txn.set_ref(name, new, expected=old)
        for name, old, new in wanted:
            self.report.refs[name] = (old, new)
        return self.report

    def _copy_signatures(self, txn: Transaction, commit_id: ObjectId) -> None:
        """The source's detached signatures of a commit pulled (or of a head held
        already: it may have been signed since), added to those this repository holds
        (attack23 6: a published repository keeps its releases' signatures). Only those
        that verify the commit are copied; an undecodable set is left behind, logged."""
        with self.src.index.reader() as reader:
            theirs = reader.commitmeta(commit_id)
        if theirs is None:
            return
        # here: PyNaCl (~30 M instructions with its imports) for signed commits only
        from store.signing import decode_signatures, encode_signatures, merge_signatures

        commit = self.commits.get(commit_id) or self.repo.read_commit(commit_id)
        data = commit.encode()
        try:
            valid = [sig for sig in decode_signatures(theirs) if sig.verifies(data)]
        except FormatError as exc:
            log.warning(
                "%s: commit %s: its signatures are not copied: %s",
                self.src.path,
                commit_id.hex(),
                exc,
            )
            return
        if not valid:
            return
        with self.repo.index.reader() as reader:
            current = reader.commitmeta(commit_id)
        merged = merge_signatures(current, encode_signatures(valid), data)
        if merged != current:
            txn.set_commitmeta(commit_id, merged, expected=current)

    def _add_commit(self, commit_id: ObjectId) -> None:
        if self.repo.has_object(commit_id) and not self.repo.is_partial(commit_id):
            return
        commit = self.src.read_commit(commit_id)
        _require_id(commit.object_id(), commit_id, self.src.path)
        self.commits[commit_id] = commit
        self.report.commits_fetched += 1

    def _walk(self) -> None:
        """Read the trees of the commits to write, and note the files this repository
        lacks. A dirtree it holds stands for its whole subtree, unless fsck --delete
        left commits partial: then held dirtrees are walked too (read here), so that
        no commit is written, and its partial mark cleared, with objects missing."""
        level = [c.tree for c in self.commits.values()]
        metas = [c.meta for c in self.commits.values()]
        while level or metas:
            held: list[ObjectId] = []
            with self.repo.snapshot() as snap:
                if self.thorough:
                    held = [
                        t
                        for t in dict.fromkeys(level)
                        if t not in self.trees and t not in self.walked_held and snap.has_object(t)
                    ]
                level = [
                    t
                    for t in dict.fromkeys(level)
                    if t not in self.trees and not snap.has_object(t)
                ]
                metas = [
                    m
                    for m in dict.fromkeys(metas)
                    if m not in self.metas and not snap.has_object(m)
                ]
            for meta_id in metas:
                meta = self.src.read_dirmeta(meta_id)
                _require_id(meta.object_id(), meta_id, self.src.path)
                self.metas[meta_id] = meta
                self.tracker.add_object()
            files: list[ObjectId] = []
            next_level: list[ObjectId] = []
            metas = []
            for tree_id in level:
                tree = self.src.read_dirtree(tree_id)
                _require_id(tree.object_id(), tree_id, self.src.path)
                self.trees[tree_id] = tree
                self.tracker.add_object()
                files += [file_id for _, file_id in tree.files]
                for _, entry in tree.dirs:
                    next_level.append(entry.tree)
                    metas.append(entry.meta)
            self.report.metadata_fetched += len(level)
            for tree_id in held:
                self.walked_held.add(tree_id)
                tree = self.repo.read_dirtree(tree_id)
                files += [file_id for _, file_id in tree.files]
                for _, entry in tree.dirs:
                    next_level.append(entry.tree)
                    metas.append(entry.meta)
            level = next_level
            with self.repo.snapshot() as snap:
                for file_id in files:
                    if file_id not in self.files and not snap.has_object(file_id):
                        self.files[file_id] = None

    def _copy_content(self) -> None:
        ids = list(self.files)
        with ThreadPoolExecutor(_THREADS, thread_name_prefix="pull-local") as pool:
            for start in range(0, len(ids), _BATCH):
                with self.repo.transaction() as txn:
                    futures: list[Future[None]] = []
                    try:
                        with interrupts_held():  # submit never blocks; see _wait_first_failure
                            for oid in ids[start : start + _BATCH]:
                                futures.append(pool.submit(self._guarded, txn, oid))
                        _wait_first_failure(futures)
                    except BaseException:
                        self._stop(futures)
                        raise
                    if not all(future.done() for future in futures):
                        self._stop(futures)  # one failed: give up the rest
                    _raise_first_failure(futures)

    def _guarded(self, txn: Transaction, object_id: ObjectId) -> None:
        """Copy one object unless the pull is stopping, counted while it runs."""
        with self.work:
            if self.stopping.is_set():
                raise _Stopped(object_id)
            self.working += 1
        try:
            self._one(txn, object_id)
        finally:
            with self.work:
                self.working -= 1
                self.work.notify_all()

    def _stop(self, futures: list[Future[None]]) -> None:
        """Give up the batch's work and wait for the copies under way, before the
        transaction closes: aborting it closes the LMDB snapshots the workers read
        through, a use-after-free while one reads. Runs on every way out, a Ctrl-C in
        the main thread included, even one inside ``pool.submit`` (whose future is
        lost, its work queued: it starts, sees ``stopping`` and does nothing; the pull
        ends, so ``stopping`` stays set). A further Ctrl-C, wherever it lands in here,
        starts the waiting again (a large file's copy stops at its next chunk) and is
        raised once no copy runs."""
        interrupted: KeyboardInterrupt | None = None
        while True:
            try:
                with interrupts_held():  # see _wait_first_failure
                    self._stop_once(futures)
                break
            except KeyboardInterrupt as exc:
                interrupted = exc
        if interrupted is not None:
            raise interrupted

    def _stop_once(self, futures: list[Future[None]]) -> None:
        with self.work:
            self.stopping.set()
        for future in futures:
            future.cancel()
        with self.work:
            self.work.wait_for(lambda: self.working == 0)

    def _one(self, txn: Transaction, object_id: ObjectId) -> None:
        header, size = self.src.read_file_header(object_id)
        mode = self.repo.mode
        _require_kept(mode.admit_file(header, "") == header, mode, object_id)
        linked = self.link and self._link(txn, object_id, header, size)
        if linked:
            pass
        elif size <= SMALL_FILE:
            stored = txn.write_file(header, self.src.read_file(object_id))
            _require_id(stored, object_id, self.src.path)
        else:
            stored = txn.write_file_chunks(header, lambda: self._chunks(object_id))
            _require_id(stored, object_id, self.src.path)
        with self.lock:
            self.report.content_fetched += 1
            self.report.bytes += size
            self.report.linked += linked
        self.tracker.add_object(content=True)

    def _link(self, txn: Transaction, object_id: ObjectId, header: FileHeader, size: int) -> bool:
        """Hardlink the object if this user may: False to copy it instead. The file is
        opened once (never through a symlink); its owner, metadata and content are
        checked through that fd, and that very inode is linked (linkat of
        /proc/self/fd/N, following it): swapping the path meanwhile changes nothing."""
        if header.is_symlink:
            return self._link_symlink(txn, object_id, header, size)
        try:
            fd = self.src.content.open_fd(object_id, size)
        except ObjectMissingError:
            return False  # reported by the copy, which reads it
        try:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid():
                return False  # even for root: its owner could rewrite the inode afterwards
            # given up at the next MiB once the pull stops: a Ctrl-C waited for the whole
            # of a large object to be hashed, further Ctrl-Cs held back meanwhile
            # (attack11.md 3)
            problem = _metadata_problem(self.src.mode, fd, st, header) or check_content(
                fd, object_id, header.encode(), size, self._give_up_if_stopping
            )
            if problem is not None:
                raise CorruptObjectError(
                    f"{self.src.path}: object {object_id.hex()}: {problem}", object_id=object_id
                )
            return self._link_fd(txn, object_id, header, size, fd)
        finally:
            os.close(fd)

    def _link_symlink(
        self, txn: Transaction, object_id: ObjectId, header: FileHeader, size: int
    ) -> bool:
        """A symlink's object (a real symlink in bare and bare-user-only repositories,
        which cannot be opened) checked and linked by path, as before (left: attack23)."""
        path = self.src.object_path(object_id)
        try:
            owner = os.lstat(path).st_uid
        except FileNotFoundError:
            return False  # reported by the copy, which reads it
        if owner != os.geteuid():
            return False
        problem = self.src.verify_file(object_id, header, size, self._give_up_if_stopping)
        if problem is not None:
            raise CorruptObjectError(
                f"{self.src.path}: object {object_id.hex()}: {problem}", object_id=object_id
            )
        try:
            txn.link_file(object_id, header, size, path)
        except OSError as exc:
            log.debug("cannot hardlink %s (%s): copying it", path, exc)
            return False
        return True

    def _link_fd(
        self, txn: Transaction, object_id: ObjectId, header: FileHeader, size: int, fd: int
    ) -> bool:
        try:
            txn.link_file(object_id, header, size, fd)
        except OSError as exc:  # no /proc, another filesystem...
            log.debug("cannot hardlink object %s (%s): copying it", object_id.hex(), exc)
            return False
        return True

    def _chunks(self, object_id: ObjectId) -> Iterator[bytes]:
        with self.src.open_file(object_id) as stream:
            while chunk := stream.read(_READ):
                self._give_up_if_stopping()
                yield chunk

    def _give_up_if_stopping(self) -> None:
        if self.stopping.is_set():
            raise _Stopped


class _Stopped(Exception):
    """A copy given up because its batch failed or was interrupted: never the error
    a pull reports (the batch's own failure is)."""


def _raise_first_failure(futures: list[Future[None]]) -> None:
    for future in futures:
        if future.cancelled():
            continue
        error = future.exception()
        if error is not None and not isinstance(error, _Stopped):
            raise error


def _metadata_problem(
    mode: RepoMode, fd: int, st: os.stat_result, header: FileHeader
) -> str | None:
    """What the opened object file records besides content, against its header (the
    modes whose files can be linked: bare, bare-user, bare-user-only)."""
    if mode is RepoMode.BARE:
        on_disk = FileHeader(
            st.st_uid, st.st_gid, st.st_mode, b"", read_xattrs(fd, follow_symlinks=True)
        )
        if on_disk != header:
            return "corrupted file object: ownership, mode or xattrs on disk differ from its id"
        return None
    if mode is RepoMode.BARE_USER:
        try:
            recorded = os.getxattr(fd, USER_META_XATTR)
        except OSError:
            recorded = b""
        if recorded != header.encode():
            return "corrupted file object: its metadata xattr differs from the index"
    return user_mode_problem(st, header.mode)


def _can_link(src: Repository, dest: Repository) -> bool:
    if src.mode is not dest.mode or dest.stores_compressed:
        return False
    try:
        return os.stat(src.path / "objects").st_dev == os.stat(dest.path / "objects").st_dev
    except OSError:
        return False


def _require_id(found: ObjectId, expected: ObjectId, source: Path) -> None:
    if found != expected:
        raise CorruptObjectError(
            f"{source}: object {expected.hex()} holds another object ({found.hex()})",
            object_id=expected,
        )


def _require_kept(kept: bool, mode: RepoMode, object_id: ObjectId) -> None:
    if not kept:
        raise ModePolicyError(
            f"object {object_id.hex()} carries ownership, xattrs or modes that a {mode.value} "
            "repository does not keep: it cannot hold this commit as it is",
            path=object_id.hex(),
        )


def _wait_first_failure(futures: list[Future[None]]) -> None:
    """wait(FIRST_EXCEPTION), a Ctrl-C let through only between waits of 50 ms. One that
    lands inside the thread pool's or a future's lock handling (submit, wait, a
    Condition's ``with``) can leave that lock held: the workers then block on it, and the
    pool's shutdown and the process's exit with them ("sapwood: interrupted", then a
    hang: review11 6)."""
    while True:
        with interrupts_held():
            done, pending = wait(futures, timeout=0.05, return_when=FIRST_EXCEPTION)
        if not pending or any(not f.cancelled() and f.exception() is not None for f in done):
            return


__all__ = ["pull_local"]
