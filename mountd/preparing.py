"""Large objects made readable in worker threads, so that the daemon's loop serves on.

The first read of a large file verifies its object: hashing it whole (every mode), and
in archive mode inflating it whole too (store/framed.py; an object from before zstd is
decompressed to a spool). For a file of gigabytes that takes seconds. Done on the trio
loop, every other request of every process on the mount waited for it (review8 4).
Here it runs in a worker thread (trio.to_thread), at most ``THREADS`` at once (the
machine's cores are for the readers too), and one more of those past their deadline
(below), while the loop answers other requests: a
request about to wait has another request loop started first (mountd/readers.py).

One object is prepared by one thread, run by a task of its own: every read of it (the
kernel's read-ahead, a second reader) waits for that one and then reads what it kept,
or fails as it failed (a damaged object of gigabytes is not inflated once per read
that was waiting). The view itself stays synchronous and single-threaded: a
Preparation's work changes nothing of it (and reads the index not at all); what the
work made is kept on the loop, and a read that finds it kept is served in that step
(no checkpoint between them, so nothing can evict it in between; evicted before the
read looked, it is prepared again).

A signal that unmounts cancels the loops (mountd/daemon.py): the reads waiting for a
verification end with them, and the verification with the run (its task is a system
task, cancelled as the run's main task ends), its thread abandoned (a daemon thread:
the process does not wait for it), so the daemon unmounts at once rather than when the
verification ends, minutes for a hostile object of a few hundred GiB of zeros; the
thread gives up at its next chunk.

No verification holds a thread slot (nor the lane of objects over LONG) longer than
``DEADLINE``: past it, it gives them back and goes on in the overdue verifications'
turns (mountd/turns.py), so one object that takes minutes holds up no other file's
first read (attack16 2). Nothing tells an object that takes minutes because it is
hostile from a legitimate one as large (a sparse VM image inflates as fast): both are
served, in turns (mountd/turns.py).

A verification no one waits for any more is given up (attack20 5, 1): every ``WATCH``
seconds it runs, the processes of the requests waiting for it are looked at
(mountd/waiters.py: each request's thread taken for its process as it arrives); a
request whose reader is gone is answered at once (an error no one sees:
ReaderGoneError), and at a look that finds no request waiting, none for at least
``ALONE`` seconds, the verification stops at its next chunk and gives its slot, lane
or turn back. Read again, it starts again. Killed readers of hostile objects held the
lane (and, past OVERDUE of them, every large file's first read) and the kernel's
background requests for the minutes of their verifications. Not at the instant the
last request is answered: a live reader waiting on the pages a killed one's request
held has no request of its own until that one is answered, and its retry comes a
moment later (attack22 2, review17 R17-1): it joins the same verification, not one
started again from its first byte (or, for an SWZ1 spool, one refused for the room the
abandoned spool still took: a live reader's EIO because another was killed). A run
started while the thread of one given up for the same object has not ended yet waits
for it first (``LEAVING`` seconds at most: it stops at its next chunk), so that what
that thread held (a spool's room in TMPDIR) is back before the new one asks for it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import trio

from mountd.sources import Preparation
from mountd.turns import Turns, Verification
from mountd.view import TreeView
from mountd.waiters import Liveness
from store import ObjectId, ReaderGoneError

log = logging.getLogger(__name__)

THREADS = 2  # objects verified at once, each in a thread of its own
# Objects larger than this (a quarter of a second to verify, and up to minutes: a
# hostile object claiming 256 GiB of zeros) take THREADS - 1 threads at most between
# them, so a thread is always left for the smaller ones (attack12: two such objects
# read at once held both threads, and every other large file's first read waited).
LONG = 256 << 20
# Seconds a verification keeps its thread slot (and the lane over LONG): 256 MiB take
# about a quarter of a second; past it, it goes on in the overdue ones' turns.
DEADLINE = 1.0
# Overdue verifications at once (a thread each, parked out of its turn: an fd, a
# decompressor). One more past its deadline keeps its slot until one of them ends.
OVERDUE = 8
# Seconds between two looks at whether anyone still waits for a verification (its
# requests' readers: mountd/waiters.py); none before the first WATCH (most end sooner).
WATCH = 0.25
_LOOKS = 256  # readers looked at every WATCH at most (more: less often)
# Seconds without a request waiting before a look gives a verification up: a reader's
# retry, once the request it waited behind is answered, comes within microseconds.
ALONE = WATCH / 2
# Seconds a new run of an object waits for the thread of its run given up to end.
LEAVING = DEADLINE


def _nothing() -> Callable[[], None]:
    """No one to tell that a request waits (a Preparer without a daemon: tests)."""
    return _nothing_more


def _nothing_more() -> None:
    """No one to tell that it has waited."""


class Preparer:
    """Runs the slow preparations of a view's files in worker threads, then the call
    that needed them."""

    def __init__(
        self,
        view: TreeView,
        threads: int = THREADS,
        on_wait: Callable[[], Callable[[], None]] | None = None,
    ) -> None:
        """``on_wait``: called before a request waits; what it returns, once it has
        waited (mountd/readers.py: a loop more meanwhile, and the count of waits)."""
        self.view = view
        self._limiter = trio.CapacityLimiter(threads)
        self._long = trio.CapacityLimiter(max(1, threads - 1))  # taken first, over LONG
        self._threads = trio.CapacityLimiter(threads + OVERDUE)  # never binds: a bound
        self._turns = Turns()
        self.overdue = 0  # verifications past their deadline, not ended
        self._running: dict[ObjectId, _Running] = {}
        self._leaving: dict[ObjectId, trio.Event] = {}  # threads of runs given up, running
        self._on_wait = on_wait or _nothing
        self.liveness = Liveness()
        self.given_up = 0  # verifications given up, no one waiting for them (a count)

    async def read(self, ino: int, offset: int, size: int, pid: int = 0) -> bytes:
        """``view.read``, once ``ino``'s object is readable. ``pid``: the reader's (0:
        unknown), whose going away gives up a verification it alone waits for."""
        slow = self.view.preparation(ino)
        if slow is not None:
            await self._ready(slow, ino, pid)
        return self.view.read(ino, offset, size)  # no checkpoint since it was kept

    async def open(self, ino: int, pid: int = 0) -> None:
        """``view.open``, once ``ino``'s object is readable."""
        slow = self.view.preparation(ino)
        if slow is not None:
            await self._ready(slow, ino, pid)
        self.view.open(ino)

    async def _ready(self, slow: Preparation, ino: int, pid: int) -> None:
        """Have ``slow`` run (or wait for the run under way) until ``ino`` is readable;
        returns with no checkpoint after it found it kept, so the caller's read does."""
        reader = self.liveness.reader(pid)  # its process, asked as the request arrives
        while True:
            running = self._running.get(slow.file_id)
            if running is None:
                running = self._running[slow.file_id] = _Running()
                trio.lowlevel.spawn_system_task(self._run, slow, running)
            waiter = _Waiter(reader)
            waited = self._on_wait()  # someone else reads the kernel's requests meanwhile
            running.waiters.append(waiter)  # after it: should it raise, none left behind
            try:
                with waiter.scope:  # cancelled once its reader is gone (_watch)
                    await running.done.wait()  # then look again: kept (or evicted since)
            finally:
                waited()
                running.waiters.remove(waiter)
                if not running.waiters:  # given up at a look, if no one comes meanwhile
                    running.alone_since = trio.current_time()
            if waiter.gone:
                raise ReaderGoneError(f"object {slow.file_id.hex()}: its reader is gone")
            if isinstance(running.error, ReaderGoneError):
                pass  # given up as this one came: it waits, so start it again
            elif running.error is not None:  # the same answer, not the same work again
                raise type(running.error)(*running.error.args) from running.error
            found = self.view.preparation(ino)
            if found is None:
                return
            slow = found

    async def _run(self, slow: Preparation, running: _Running) -> None:
        """The preparation, in a task of its own: given up (its scope cancelled) once
        no request waits for it, whoever asked first."""
        try:
            with running.scope:
                made = await self._in_thread(slow, running)
                slow.finish(made)
            if running.scope.cancelled_caught:
                self.given_up += 1
                log.info("verification of %s given up: no one waits for it", slow.file_id.hex())
                running.error = ReaderGoneError(f"object {slow.file_id.hex()}: no one waits")
        except Exception as exc:  # the requests waiting answer it
            running.error = exc
        finally:
            del self._running[slow.file_id]
            if running.started and not running.left.is_set():  # abandoned, still running
                self._leaving[slow.file_id] = running.left
            running.done.set()

    async def _in_thread(self, slow: Preparation, running: _Running) -> object:
        """``slow.work`` in a worker thread, once it has a slot (and the lane over LONG
        if that large), which it gives back at its deadline."""
        verification = Verification(self._turns, slow.file_id)
        slots = [self._long, self._limiter] if slow.size > LONG else [self._limiter]
        held: list[trio.CapacityLimiter] = []
        try:
            ended = _Ended()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch, running)  # from now on: while it waits too
                leaving = self._leaving.get(slow.file_id)
                if leaving is not None:  # the thread of a run given up, not ended yet
                    with trio.move_on_after(LEAVING):
                        await leaving.wait()
                for slot in slots:
                    await slot.acquire_on_behalf_of(verification)
                    held.append(slot)
                nursery.start_soon(
                    self._thread, slow, verification, ended, running, nursery.cancel_scope
                )
                await self._overdue_at_deadline(verification, held)  # or until it ends
            return ended.result()
        finally:
            verification.give_up()  # it ended; or no one waits for it (cancelled)
            for slot in held:
                slot.release_on_behalf_of(verification)
            if verification.overdue:
                self.overdue -= 1

    async def _thread(
        self,
        slow: Preparation,
        verification: Verification,
        ended: _Ended,
        running: _Running,
        scope: trio.CancelScope,
    ) -> None:
        """The work in a worker thread; how it ended is kept in ``ended`` (not raised:
        a nursery would raise it in an ExceptionGroup), then ``scope`` is cancelled.
        ``running.left`` is set once the thread's work has really ended (abandoned too)."""
        token = trio.lowlevel.current_trio_token()

        def work() -> object:
            running.started = True  # here: a run cancelled before its thread began has none
            try:
                # given up between the thread's start and here: stop before a spool
                # promises its room (review18 R18-6), as the work's own checks would later
                verification.check()
                return _work(slow, verification)
            finally:  # before its result is reported: set first
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(self._left, slow.file_id, running.left)

        try:
            # abandon_on_cancel: a cancelled loop (an unmount) does not wait for it
            ended.value = await trio.to_thread.run_sync(
                work, limiter=self._threads, abandon_on_cancel=True
            )
        except Exception as exc:
            ended.error = exc
        scope.cancel()

    def _left(self, file_id: ObjectId, left: trio.Event) -> None:
        """On the loop: the thread of a run of ``file_id`` has ended."""
        left.set()
        if self._leaving.get(file_id) is left:
            del self._leaving[file_id]

    async def _watch(self, running: _Running) -> None:
        """Every WATCH seconds: answer the requests whose readers are gone; give the
        preparation up if no request has waited for it for ALONE seconds."""
        while True:
            # a look costs ~20 us a reader: 1,000 readers waiting, one every second
            await trio.sleep(WATCH * max(1.0, len(running.waiters) / _LOOKS))
            if not running.waiters and trio.current_time() - running.alone_since >= ALONE:
                running.scope.cancel()  # no one waits for it: given up
                return
            seen: dict[int, bool] = {}  # a reader's pid, in each request of its read-ahead
            for waiter in running.waiters:
                if waiter.pid not in seen:
                    seen[waiter.pid] = self.liveness.gone(waiter.pid)
                if seen[waiter.pid]:
                    waiter.gone = True
                    waiter.scope.cancel()

    async def _overdue_at_deadline(
        self, verification: Verification, held: list[trio.CapacityLimiter]
    ) -> None:
        """At its deadline (once fewer than OVERDUE are), ``verification`` gives its
        slots back and goes on in its turns."""
        await trio.sleep(DEADLINE)
        while self.overdue >= OVERDUE:
            await trio.sleep(DEADLINE)
        self.overdue += 1
        verification.overdue = True
        while held:
            held.pop().release_on_behalf_of(verification)


def _work(slow: Preparation, verification: Verification) -> object:
    """The work of ``slow``, paced by ``verification`` (in the worker thread)."""
    try:
        return slow.work(verification)
    finally:
        verification.ended()


class _Ended:
    """What a worker thread's work returned, or what it raised."""

    def __init__(self) -> None:
        self.value: object = None
        self.error: Exception | None = None

    def result(self) -> object:
        if self.error is not None:
            raise self.error
        return self.value


class _Waiter:
    """A request waiting for a preparation: its reader's pid (0: unknown), and what
    cancels its wait once that reader is gone."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.gone = False
        self.scope = trio.CancelScope()


class _Running:
    """A preparation under way: done, and how it failed (for the requests that waited);
    the requests waiting for it, since when none has, and what gives it up once there
    are none; whether its thread started, and has ended (``left``, after ``done`` if it
    was abandoned)."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: Exception | None = None
        self.waiters: list[_Waiter] = []
        self.alone_since = 0.0  # set when the last request waiting leaves
        self.scope = trio.CancelScope()
        self.started = False  # set in its thread (a bool: read on the loop)
        self.left = trio.Event()
