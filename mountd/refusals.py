"""Objects refused lately, remembered so that a read of one again is refused at once.

Verifying a hostile object of zeros claiming hundreds of GiB takes minutes (inflating
it whole), and each read of it asked for that twice: the kernel's read-ahead, then its
retry of the page. Refused once, an object is refused at once the next time while its
file is unchanged: the same key (its id, the inode number and ctime of its file, as
mountd/sources.py's verified objects), not inflated (nor spooled) again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from store import CorruptObjectError, ObjectId

REFUSED = 1 << 10  # objects refused lately, unchanged since: refused again at once


class Refusals:
    """Objects whose verification refused them, by the key of their file. Used from
    worker threads (a lock); the last REFUSED kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: dict[int, str] = {}

    @contextmanager
    def noted(self, key: int, file_id: ObjectId) -> Iterator[None]:
        """Refuse at once if ``key`` was refused before; else note a refusal."""
        with self._lock:
            message = self._found.get(key)
        if message is not None:
            raise CorruptObjectError(message, object_id=file_id)
        try:
            yield
        except CorruptObjectError as exc:
            with self._lock:
                if len(self._found) >= REFUSED:
                    del self._found[next(iter(self._found))]
                self._found[key] = str(exc)
            raise
