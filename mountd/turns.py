"""Verifications past their deadline take turns, one at a time (mountd/preparing.py).

A verification that has run longer than its deadline gives its worker-thread slot
back to the daemon's loop (and the lane of objects over 256 MiB, if it held it), so
one object that takes minutes (a hostile one of zeros claiming 256 GiB) holds up no
other file's first read. It goes on in its thread, but only in its turn: the overdue
verifications run one at a time, each for ``slice`` seconds while another waits for a
turn, parked (no CPU) between its chunks meanwhile. So however many are overdue, one
core at most verifies them, and each gets its share: a legitimate 10 GiB file that
verifies beside a hostile object takes twice as long, not minutes more.

The loop and the worker threads share a :class:`Verification`: the loop says when it
is overdue and when no one waits for it any more (its readers gone: mountd/waiters.py;
or their requests cancelled: an unmount); the thread calls it between chunks (MiB),
where it waits for its turn or gives up.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from store import ObjectId, ObjectReadError

SLICE = 0.25  # seconds an overdue verification runs while another waits for a turn


class Turns:
    """Whose turn it is among the overdue verifications (used from worker threads)."""

    def __init__(self, slice_seconds: float = SLICE) -> None:
        self.slice = slice_seconds
        self._cond = threading.Condition()
        self._holder: Verification | None = None
        self._queue: deque[Verification] = deque()  # waiting for a turn, first come first

    def take(self, verification: Verification) -> None:
        """Return when it is ``verification``'s turn (at once while its slice lasts, or
        while no other waits); raise if it is given up meanwhile."""
        with self._cond:
            if self._holder is verification:
                if not self._queue or time.monotonic() < verification.turn_ends:
                    return
                self._queue.append(verification)  # its slice is over: the next one's turn
                self._pass()
            elif verification not in self._queue:
                if self._holder is None:  # then no one waits either (see _pass)
                    self._give(verification)
                    return
                self._queue.append(verification)
            while self._holder is not verification and not verification.given_up:
                self._cond.wait()
        verification.check()

    def leave(self, verification: Verification) -> None:
        """``verification`` ended (verified, failed or given up): the next one's turn."""
        with self._cond:
            if self._holder is verification:
                self._pass()
            elif verification in self._queue:
                self._queue.remove(verification)

    def wake(self) -> None:
        """Let waiting threads look again (one of them was given up)."""
        with self._cond:
            self._cond.notify_all()

    @property
    def waiting(self) -> int:
        """How many overdue verifications wait for a turn."""
        with self._cond:
            return len(self._queue)

    def _pass(self) -> None:
        self._holder = None
        if self._queue:
            self._give(self._queue.popleft())
        self._cond.notify_all()

    def _give(self, verification: Verification) -> None:
        self._holder = verification
        verification.turn_ends = time.monotonic() + self.slice


class Verification:
    """One object's verification, as its worker thread's work sees it between chunks
    (the ``pace`` of mountd/sources.py) and as the loop steers it."""

    def __init__(self, turns: Turns, file_id: ObjectId) -> None:
        self._turns = turns
        self.file_id = file_id
        self.overdue = False  # set by the loop: past its deadline, it runs in its turn
        self.given_up = False  # set by the loop: no one waits for it any more
        self.turn_ends = 0.0

    def __call__(self) -> None:
        """Between two chunks, in the worker thread: go on, wait for a turn, or give up."""
        self.check()
        if self.overdue:
            self._turns.take(self)

    def check(self) -> None:
        """Raise if the loop gave this verification up."""
        if self.given_up:
            raise ObjectReadError(
                f"object {self.file_id.hex()}: verification given up, no one waits for it"
            )

    def ended(self) -> None:
        """In the worker thread, once the work has ended however it ended."""
        self._turns.leave(self)

    def give_up(self) -> None:
        """On the loop: stop at the next chunk (a thread waiting for its turn at once)."""
        self.given_up = True
        self._turns.wake()
