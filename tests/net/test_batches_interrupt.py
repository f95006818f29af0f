"""The HTTP pull's batches abort a transaction only once no work runs on it, even
when a Ctrl-C lost the future of work already queued (attack11.md finding 9)."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

import pytest

from store.pull.batches import Batches
from store.repo import Repository
from store.transaction import Transaction


class _Txn:
    def __init__(self, log: list[str]) -> None:
        self._log = log

    def abort(self) -> None:
        self._log.append("abort")

    def commit(self) -> None:
        self._log.append("commit")


class _Repo:
    def __init__(self, log: list[str]) -> None:
        self._log = log

    def transaction(self) -> _Txn:
        return _Txn(self._log)


class _LosingPool:
    """A pool whose submit queues the work, then is interrupted: the future is lost."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._pool = pool

    def submit(self, fn: Any, *args: Any) -> Future[None]:
        self._pool.submit(fn, *args)
        raise KeyboardInterrupt


def test_a_lost_future_s_running_work_is_waited_for_before_the_abort() -> None:
    log: list[str] = []
    started = threading.Event()

    def work(txn: Transaction) -> None:
        started.set()
        time.sleep(0.3)  # still staging into txn when the pull is abandoned
        log.append("work done")

    with ThreadPoolExecutor(2) as pool:
        batches = Batches(
            cast(Repository, _Repo(log)), cast(ThreadPoolExecutor, _LosingPool(pool)), 10, 10
        )
        with pytest.raises(KeyboardInterrupt):
            batches.submit(work)
        assert started.wait(5)
        batches.abandon()
    assert log == ["work done", "abort"]


def test_work_queued_by_a_lost_future_does_nothing_once_abandoned() -> None:
    log: list[str] = []
    gate = threading.Event()

    def work(txn: Transaction) -> None:
        log.append("work ran")

    with ThreadPoolExecutor(1) as pool:
        pool.submit(gate.wait, 5)  # the only worker is busy: the lost work waits in the queue
        batches = Batches(
            cast(Repository, _Repo(log)), cast(ThreadPoolExecutor, _LosingPool(pool)), 10, 10
        )
        with pytest.raises(KeyboardInterrupt):
            batches.submit(work)
        batches.abandon()
        gate.set()
    assert log == ["abort"]


def test_a_ctrl_c_while_finish_waits_aborts_the_last_batch_after_its_work() -> None:
    """finish() takes the last batch from abandon()'s sight: it aborts it itself."""
    log: list[str] = []

    def work(txn: Transaction) -> None:
        time.sleep(0.4)
        log.append("work done")

    interrupt = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
    with ThreadPoolExecutor(2) as pool:
        batches = Batches(cast(Repository, _Repo(log)), pool, 10, 10)
        batches.submit(work)
        interrupt.start()
        with pytest.raises(KeyboardInterrupt):
            batches.finish()
        batches.abandon()
    interrupt.join()
    assert log == ["work done", "abort"]
