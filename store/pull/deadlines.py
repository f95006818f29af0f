"""Deadlines on blocking socket reads that a per-recv() timeout does not bound.

A socket timeout bounds each recv(): a server that sends one byte a second never
trips it, so a response head can be made to last for ever (F1 of the security
review). :data:`WATCHDOG` is one thread for the whole process that runs each armed
action (shutting a socket down, which ends the blocked read at once) when its
deadline passes. Arming and disarming cost a heap push and a flag under a lock: no
thread or timer per request, and the thread is woken only when a new deadline is
the earliest one.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)
_COMPACT_AT = 1024  # disarmed alarms kept in the heap before it is rebuilt


class Alarm:
    """An action due at ``deadline`` (time.monotonic()); ``fired`` once it ran."""

    __slots__ = ("action", "deadline", "fired", "order")

    def __init__(self, deadline: float, order: int, action: Callable[[], None]) -> None:
        self.deadline = deadline
        self.order = order
        self.action: Callable[[], None] | None = action
        self.fired = False

    def __lt__(self, other: Alarm) -> bool:
        return (self.deadline, self.order) < (other.deadline, other.order)


class Watchdog:
    """Runs actions at their deadlines, from one daemon thread started on first use."""

    def __init__(self) -> None:
        self._wakeup = threading.Condition(threading.Lock())
        self._heap: list[Alarm] = []
        self._order = itertools.count()
        self._disarmed = 0
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, action: Callable[[], None]) -> Alarm:
        """Run ``action`` at ``deadline`` unless :meth:`disarm` comes first. The action
        runs on the watchdog's thread and must be quick (it holds the watchdog's lock)."""
        alarm = Alarm(deadline, next(self._order), action)
        with self._wakeup:
            heapq.heappush(self._heap, alarm)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
                self._thread.start()
            elif self._heap[0] is alarm:
                self._wakeup.notify()
        return alarm

    def disarm(self, alarm: Alarm) -> bool:
        """Cancel ``alarm``; False if its action ran already (then or before)."""
        with self._wakeup:
            if alarm.fired:
                return False
            if alarm.action is not None:
                alarm.action = None
                self._disarmed += 1
                if self._disarmed > _COMPACT_AT and 2 * self._disarmed > len(self._heap):
                    self._heap = [a for a in self._heap if a.action is not None]
                    heapq.heapify(self._heap)
                    self._disarmed = 0
            return True

    def _run(self) -> None:
        with self._wakeup:
            while True:
                while self._heap and self._heap[0].action is None:
                    heapq.heappop(self._heap)
                    self._disarmed -= 1
                if not self._heap:
                    self._wakeup.wait()
                    continue
                left = self._heap[0].deadline - time.monotonic()
                if left > 0:
                    self._wakeup.wait(left)
                    continue
                alarm = heapq.heappop(self._heap)
                action, alarm.action, alarm.fired = alarm.action, None, True
                try:
                    assert action is not None
                    action()
                except Exception:  # an action that fails must not stop the others
                    log.exception("watchdog action failed")


WATCHDOG = Watchdog()
