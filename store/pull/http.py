"""Fetching files of a remote repository over HTTP.

One :class:`Fetcher` per pull, with two ways to fetch and one count of requests and
bytes:

- :meth:`Fetcher.fetch_many`: many files pipelined on one kept-alive connection per
  thread (store/pull/pipelined.py) as long as the answers are plain; the file the
  pipeline fails on and every later one go the per-object way;
- :meth:`Fetcher.fetch` and :meth:`Fetcher.get`: one file at a time on urllib3
  connections (store/pull/per_object.py: timeouts, retries with backoff, redirects,
  head deadlines, size limits, and the errors' words). That module is imported on
  first use: a pull whose answers all go through the pipelined lane never imports
  urllib3 or http.client (~30 ms of an update pull's CPU).

Both ways share the pull's connections (store/pull/budget.py): at most
``settings.connections`` open at once, whichever thread and way uses them.

Library code: nothing is printed; counters feed the caller's progress.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Generator
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from store.pull.budget import Budget, Halted
from store.pull.pipelined import Lane
from store.pull.settings import FetchSettings

if TYPE_CHECKING:
    from store.pull.per_object import PerObjectFetcher

_T = TypeVar("_T")


class Fetcher:
    """GETs files below one repository URL; thread-safe, use as a context manager."""

    def __init__(
        self,
        base_url: str,
        settings: FetchSettings,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.settings = settings
        self._on_bytes = on_bytes
        self._lock = threading.Lock()
        self._lane_requests = 0
        self._lane_bytes = 0
        self._single: PerObjectFetcher | None = None
        self._budget = Budget(settings.connections)
        self._lane = Lane.of(
            self.base_url, settings, self._budget, self._count_requests, self._count_bytes
        )

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def requests(self) -> int:
        """HTTP requests sent (a pipelined request the server never answered too)."""
        single = self._single
        return self._lane_requests + (single.requests if single is not None else 0)

    @property
    def bytes(self) -> int:
        """Body bytes read."""
        single = self._single
        return self._lane_bytes + (single.bytes if single is not None else 0)

    def close(self) -> None:
        self._budget.close()
        if self._single is not None:
            self._single.close()

    def halt(self) -> None:
        """The pull stops (a Ctrl-C, or an error it raises already): every fetch running
        or to come ends soon with Halted (attack14.md, finding 5: a Ctrl-C waited for a
        stalled fetch's every attempt), a connect in progress too. For good: a halted
        fetcher fetches nothing. Imports nothing (urllib3 is not loaded for it)."""
        if self._lane is not None:
            self._lane.halt()
        self._budget.halt()

    def url(self, relpath: str) -> str:
        return self.base_url + relpath

    def get(self, relpath: str, limit: int) -> builtins.bytes:
        """The body of ``relpath`` (at most ``limit`` bytes), retried on transient
        failures; NetworkError once they are spent, or at once for a 4xx (status set)."""
        return self.fetch(relpath, limit, _read)

    def fetch(self, relpath: str, limit: int, consume: Callable[[BinaryIO], _T]) -> _T:
        """``consume(body)`` of the body of ``relpath``, one request at a time (see
        store/pull/per_object.py's PerObjectFetcher.fetch)."""
        with self._budget.slot():  # checked out before urllib3 is imported for it
            return self._per_object().fetch(relpath, limit, consume)

    def fetch_many(
        self, relpaths: list[str], limit: int, consume: Callable[[int, BinaryIO], _T]
    ) -> Generator[tuple[str, _T], None, None]:
        """``(relpath, consume(i, body))`` for each file ``relpaths[i]``, in order, each
        body as :meth:`fetch` gives it. Pipelined on one connection
        (store/pull/pipelined.py) as far as the answers are plain; the file the
        pipeline failed on and every one after it go through :meth:`fetch` one by one,
        which raises the proper errors (those of the first file that fails). Close the
        generator if you stop early (its connection is closed then)."""
        if not relpaths:  # no slot taken, nor waited for (review13 L2)
            return
        with self._budget.slot() as slot:  # the rest, one by one, uses it too
            done = 0
            if self._lane is not None and not self._lane.off:
                for result in self._lane.fetch(relpaths, limit, consume, slot):
                    yield relpaths[done], result
                    done += 1
            for index in range(done, len(relpaths)):
                relpath = relpaths[index]
                if self._budget.halted.is_set():
                    raise Halted(url=self.url(relpath))
                yield relpath, self.fetch(relpath, limit, partial(consume, index))

    def _per_object(self) -> PerObjectFetcher:
        single = self._single
        if single is not None:
            return single
        with self._lock:
            if self._single is None:
                from store.pull.per_object import PerObjectFetcher  # urllib3: on first use

                self._single = PerObjectFetcher(
                    self.base_url, self.settings, self._on_bytes, self._budget
                )
            return self._single

    def _count_requests(self, count: int) -> None:
        with self._lock:
            self._lane_requests += count

    def _count_bytes(self, size: int) -> None:
        with self._lock:
            self._lane_bytes += size
        if self._on_bytes is not None:
            self._on_bytes(size)


def _read(body: BinaryIO) -> builtins.bytes:
    return body.read()
