"""Content objects stored in batches while the pull goes on.

Each batch is a transaction that moves no ref. Work for a batch (fetch, decode,
verify, stage) runs in the pull's thread pool; once a batch is full, a committer
thread waits for its work and commits it, while the next batch is already being
filled: the disk's syncs overlap the network. A batch is closed only once the commit
before it is done, so a slow disk holds the pull back rather than letting uncommitted
work pile up (what an interrupted pull would lose). A failure anywhere stops every
later piece of work from starting, aborts the batches not yet committed, and is
raised by the next ``submit`` or by ``finish``. Batches committed before it stay: an
interrupted pull keeps them, and the next one does not fetch them again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from store.interrupts import interrupts_held
from store.pull.pipelined import Halted
from store.repo import Repository
from store.transaction import Transaction

log = logging.getLogger(__name__)
Work = Callable[[Transaction], None]


class Stopped(Exception):
    """Work skipped because another piece failed first (never raised to a caller)."""


class Batches:
    """Submit work that stores objects; ``finish()`` once all is submitted."""

    def __init__(self, repo: Repository, pool: ThreadPoolExecutor, size: int, bound: int) -> None:
        self._repo = repo
        self._pool = pool
        self._size = size
        self._slots = threading.BoundedSemaphore(bound)  # work queued at most
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="pull-commit")
        self._txn: Transaction | None = None
        self._pending: list[Future[None]] = []
        self._weight = 0  # objects of the pending work
        self._commits: list[Future[None]] = []
        self._failed = threading.Event()
        # work running now, counted by the workers themselves (as pull-local's copies
        # are): a Ctrl-C inside pool.submit or add_done_callback loses the future with
        # the work queued, so the futures cannot say what still runs on a transaction
        self._work = threading.Condition()
        self._running = 0
        self.stored = 0
        self.on_stop: Callable[[], None] | None = None  # the pull stops: end running work

    @property
    def stopped(self) -> bool:
        """Whether work is to stop (a failure, or abandon()): a piece of work that
        stores many objects checks it between them and raises Stopped (attack14.md,
        finding 1: a failure or a Ctrl-C waited for every running piece's 64 objects)."""
        return self._failed.is_set()

    def submit(self, work: Work, weight: int = 1) -> None:
        """Run ``work(txn)`` in the pool, in the batch being filled; ``weight``: the
        objects it stores (a batch holds ``size`` objects, not pieces of work)."""
        self._raise_failure()
        if self._txn is None:
            self._txn = self._repo.transaction()
        self._take_slot()
        with interrupts_held():  # submit never blocks; see _take_slot
            future = self._pool.submit(self._run, work, self._txn)
            future.add_done_callback(lambda _: self._slots.release())
        self._pending.append(future)
        self._weight += weight
        if self._weight >= self._size:
            self._close_batch()

    def _take_slot(self) -> None:
        """``_slots.acquire()``, a Ctrl-C let through only between tries of 50 ms. One
        that lands inside a Condition's ``with`` just after its lock was taken (the
        slots', the pool's idle semaphore's in submit, the future's in
        add_done_callback or wait) leaves that lock held: the workers block on it, then
        the pool's shutdown and the process's exit ("sapwood: interrupted", then a hang:
        review11 6, found in pull-local; tests/net/test_batches_lock_interrupt.py)."""
        while True:
            with interrupts_held():
                if self._slots.acquire(timeout=0.05):
                    return

    def _run(self, work: Work, txn: Transaction) -> None:
        with self._work:  # checked and counted at once: _abort sees it or it sees _failed
            if self._failed.is_set():
                raise Stopped
            self._running += 1
        try:
            work(txn)
        except BaseException:
            self._failed.set()
            raise
        finally:
            with self._work:
                self._running -= 1
                self._work.notify_all()

    def _abort(self, txn: Transaction) -> None:
        """Abort ``txn`` once no work runs: the abort closes the LMDB snapshots and
        removes the staging directory that running work uses (a use-after-free).
        Work that starts later sees ``_failed`` and does nothing."""
        interrupted: KeyboardInterrupt | None = None
        while True:  # a further Ctrl-C waits again, and is raised once none runs
            try:
                with self._work:
                    self._failed.set()
                    self._work.wait_for(lambda: self._running == 0)
                break
            except KeyboardInterrupt as exc:
                interrupted = exc
        txn.abort()
        if interrupted is not None:
            raise interrupted

    def _close_batch(self) -> None:
        txn, pending, weight = self._txn, self._pending, self._weight
        self._txn, self._pending, self._weight = None, [], 0
        if txn is None:
            return
        if self._commits:  # one commit at a time behind the filling: what was fetched is
            _wait_all(self._commits[-1:])  # stored at most two batches later, even if slow
        with interrupts_held():
            self._commits.append(self._committer.submit(self._commit, txn, pending, weight))

    def _commit(self, txn: Transaction, pending: list[Future[None]], weight: int) -> None:
        wait(pending)
        error = _first_error(pending)
        if error is not None or self._failed.is_set():
            self._abort(txn)
            if error is not None:
                raise error
            raise Stopped
        try:
            txn.commit()
        except BaseException:
            self._failed.set()
            raise
        self.stored += weight
        log.debug("stored a batch of %d content objects", weight)

    def _raise_failure(self) -> None:
        if not self._failed.is_set():
            return
        self.finish()  # raises the first error
        raise Stopped  # not reached: a failure has an error

    def finish(self, final: Work | None = None) -> None:
        """Wait for every batch; then ``final(txn)`` in the last batch's transaction (a
        new one if every batch is committed already), committed here. The first error,
        if any, and then nothing of the last batch is committed."""
        txn, pending, weight = self._txn, self._pending, self._weight
        self._txn, self._pending, self._weight = None, [], 0
        try:
            _wait_all(self._commits)
            _wait_all(pending)
            self._committer.shutdown(wait=True)
        except BaseException:  # a Ctrl-C: abandon() no longer sees the last batch
            self._stop_running()
            if txn is not None:
                self._abort(txn)
            raise
        error = _first_error(self._commits + pending)
        self._commits = []
        if error is not None:
            if txn is not None:
                self._abort(txn)
            raise error
        self.stored += weight
        if final is None and txn is None:
            return
        txn = txn or self._repo.transaction()
        try:
            if final is not None:
                final(txn)
        except BaseException:
            txn.abort()
            raise
        txn.commit()

    def abandon(self) -> None:
        """Stop: skip queued work, abort what is not committed (after an error elsewhere)."""
        self._failed.set()
        self._stop_running()
        self._close_batch()
        _wait_all(self._commits)
        self._committer.shutdown(wait=True)

    def _stop_running(self) -> None:
        """``on_stop`` (the fetcher's halt: running work blocked on the network ends
        soon), once the pull stops for a Ctrl-C or an error of its own."""
        if self.on_stop is not None:
            try:
                self.on_stop()
            except Exception:  # stopping must not fail the stop
                log.exception("stopping the running work failed")


def _wait_all(futures: list[Future[None]]) -> None:
    """wait(futures) in the main thread, a Ctrl-C let through only between waits of 50
    ms (wait takes each future's condition: see Batches._take_slot). Elsewhere (the
    committer thread) the holding does nothing."""
    while True:
        with interrupts_held():
            _, pending = wait(futures, timeout=0.05)
        if not pending:
            return


def _first_error(futures: list[Future[None]]) -> BaseException | None:
    """The first real error among finished futures (a Stopped one only if none other)."""
    stopped: BaseException | None = None
    for future in futures:
        if future.cancelled():
            continue
        error = future.exception()
        if error is None:
            continue
        if not isinstance(error, Stopped | Halted):
            return error
        stopped = stopped or error
    return stopped
