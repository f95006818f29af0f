"""pyfuse3's request loops: one, and one more for each request that waits.

Every handler answers at once but the first read of a large object, which waits for
its verification in a worker thread (mountd/preparing.py). One request loop serves
every request in turn, as fast as the daemon can: with pyfuse3's own pool of tasks
(``pyfuse3.main(max_tasks=N)``) two loops at least take turns at every request, which
cost 40 % more per small file read (5,000 files stat and read: 250-306 us each
against 173-215, load 4.5).

So each loop here is a ``pyfuse3.main`` call of its own that never starts another
(``max_tasks`` below any count it can have: each call sets pyfuse3's task count to 1,
and each loop that ends takes 1 from it), and ends at the top of its loop when another
loop is waiting for requests (``min_tasks=0``). A handler about to wait calls
:meth:`Readers.add`: one more loop takes the requests meanwhile; once it has answered,
one of the two ends. At rest there is one loop again.
"""

from __future__ import annotations

from collections.abc import Callable

import pyfuse3
import trio

_NEVER_SPAWN = -(1 << 30)  # pyfuse3 starts a task when its count is below max_tasks


class Readers:
    """The loops reading the kernel's requests, in a nursery of their own: :meth:`run`
    returns when the last one ends (the session ended: unmounted or terminated).

    A loop ends on its own when another is waiting for requests, or when the session is
    over (unmounted): then the loops whose handlers wait for a verification would stay
    until it ends, minutes for a hostile object, the daemon alive after its unmount
    (attack12 2). So the loops count the handlers waiting: when a loop ends and every
    loop left is one of theirs, none is reading requests, so the session is over (a loop
    that ends because another reads requests leaves that one), and the waits are
    cancelled, their threads abandoned as a SIGTERM abandons them."""

    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None
        self.started = 0
        self.loops = 0  # running
        self.waiting = 0  # handlers waiting (each holds a loop)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._start()
        self._nursery = None

    def add(self) -> Callable[[], None]:
        """One more loop, for a handler about to wait (none once the loops have ended);
        the handler calls what this returns once it has waited."""
        if self._nursery is None:
            return _nothing
        self.waiting += 1
        self._start()
        return self._waited

    def _waited(self) -> None:
        self.waiting -= 1

    def _start(self) -> None:
        assert self._nursery is not None
        self.started += 1
        self.loops += 1
        self._nursery.start_soon(self._loop)

    async def _loop(self) -> None:
        try:
            await pyfuse3.main(min_tasks=0, max_tasks=_NEVER_SPAWN)
        finally:
            self.loops -= 1
        if self.loops and self.loops == self.waiting and self._nursery is not None:
            self._nursery.cancel_scope.cancel()  # the session is over (see the class)


def _nothing() -> None:
    """Nothing to undo: no loop was added."""
