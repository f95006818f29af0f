"""What a pull tells as it goes (:class:`PullProgress`, through a thread-safe
:class:`_Tracker`) and what it reports at the end (:class:`PullReport`); pull-local
uses them too."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from store.ids import ObjectId
from store.record import Frozen, Value

_PROGRESS_EVERY = 0.1  # seconds between two progress reports


class PullProgress(Frozen):
    """Where a pull is: ``phase`` ("summary", "commits", "delta", "trees", "content",
    "writing", "done"), objects and bytes fetched so far, and the content objects to
    fetch (None until the trees are walked)."""

    __slots__ = ("bytes", "content_done", "content_total", "elapsed", "objects", "phase")

    phase: str
    objects: int
    bytes: int
    content_total: int | None
    content_done: int
    elapsed: float

    def __init__(
        self,
        phase: str,
        objects: int,
        bytes: int,  # the field's name
        content_total: int | None,
        content_done: int,
        elapsed: float,
    ) -> None:
        object.__setattr__(self, "phase", phase)
        object.__setattr__(self, "objects", objects)
        object.__setattr__(self, "bytes", bytes)
        object.__setattr__(self, "content_total", content_total)
        object.__setattr__(self, "content_done", content_done)
        object.__setattr__(self, "elapsed", elapsed)


class PullReport(Value):
    """What a pull did (or, with ``dry_run``, would do).

    ``refs``: each local ref name -> (the commit it held before or None, the commit it
    holds now or would hold); ``metadata_fetched`` and ``content_fetched``: objects
    fetched one by one; ``content_missing``: content objects the local repository
    lacked (the dry run's "would fetch"); ``delta_objects``: objects that came in
    static deltas (``deltas``: which, as "FROM-TO" or "TO"); ``bytes``: bytes read
    from the network (pull-local: content bytes copied or linked); ``requests``: HTTP
    requests made; ``linked``: content objects pull-local hardlinked."""

    __slots__ = (
        "bytes",
        "commits_fetched",
        "content_fetched",
        "content_missing",
        "delta_objects",
        "deltas",
        "dry_run",
        "linked",
        "metadata_fetched",
        "refs",
        "remote",
        "requests",
    )

    def __init__(
        self,
        remote: str,
        dry_run: bool,
        refs: dict[str, tuple[ObjectId | None, ObjectId]] | None = None,
    ) -> None:
        self.remote = remote
        self.dry_run = dry_run
        self.refs: dict[str, tuple[ObjectId | None, ObjectId]] = {} if refs is None else refs
        self.commits_fetched = 0
        self.metadata_fetched = 0
        self.content_fetched = 0
        self.content_missing = 0
        self.delta_objects = 0
        self.deltas: list[str] = []
        self.bytes = 0
        self.requests = 0
        self.linked = 0

    @property
    def changed(self) -> dict[str, tuple[ObjectId | None, ObjectId]]:
        """The refs that moved (or would move)."""
        return {name: (old, new) for name, (old, new) in self.refs.items() if old != new}


ProgressCallback = Callable[[PullProgress], None]


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
