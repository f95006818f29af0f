"""Reading an HTTP response's body for the per-object path (store/pull/per_object.py).

:class:`Body` is a body as a raw stream: never more than the caller's limit, given up
on when it trickles (fewer than ``low_speed_bytes`` in ``read_timeout`` seconds, as
libcurl's low-speed limit does for OSTree), its bytes counted as they come.
:func:`discard` ends a response whose body is not wanted (a redirect's, an error
page's), reading a short one so that its connection stays alive.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import urllib3
from urllib3 import exceptions as u3

from store.errors import NetworkError
from store.pull.fetch_failures import Transient, describe
from store.pull.settings import FetchSettings

DRAIN_MAX = 64 << 10  # an error page up to this size is read to keep its connection


class Body(io.RawIOBase):
    """An HTTP body as a raw stream: bounded, and given up on when it trickles."""

    def __init__(
        self,
        response: urllib3.BaseHTTPResponse,
        url: str,
        limit: int,
        settings: FetchSettings,
        count: Callable[[int], None],
    ) -> None:
        super().__init__()
        self._response = response
        self._url = url
        self._limit = limit
        self._settings = settings
        self._count = count
        self._total = 0
        self._window_start = time.monotonic()
        self._window_bytes = 0
        self.ended = False

    def readable(self) -> bool:
        return True

    def read_all(self, length: int) -> bytes:
        """The whole body of a response that said its length (not above the limit):
        read as it comes, with the same checks as readinto, in fewer calls. An answer
        that also says ``Transfer-Encoding: chunked`` is read by urllib3 to its last
        chunk whatever its length said (review16 R16-1: 20 MiB given for a limit of
        1,000): never more than the length is taken."""
        parts = []
        while True:
            try:
                chunk = self._response.read1(length + 1)
            except (u3.HTTPError, OSError) as exc:
                raise Transient(describe(exc)) from None
            if not chunk:
                self.ended = True
                break
            parts.append(chunk)
            self._total += len(chunk)
            if self._total > min(length, self._limit):  # chunked too: the length ignored
                raise NetworkError(
                    f"{self._url}: more than the {length} bytes it said", url=self._url
                )
            self._check_speed(len(chunk))
        self._count(self._total)
        return b"".join(parts)

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.ended:
            return 0
        try:
            chunk = self._response.read1(len(buffer))
        except (u3.HTTPError, OSError) as exc:
            raise Transient(describe(exc)) from None
        if not chunk:
            self.ended = True
            return 0
        self._total += len(chunk)
        if self._total > self._limit:
            raise NetworkError(
                f"{self._url}: more than the {self._limit} bytes allowed", url=self._url
            )
        self._count(len(chunk))
        self._check_speed(len(chunk))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def _check_speed(self, size: int) -> None:
        self._window_bytes += size
        now = time.monotonic()
        if now - self._window_start < self._settings.read_timeout:
            return
        if self._window_bytes < self._settings.low_speed_bytes:
            raise Transient(
                f"fewer than {self._settings.low_speed_bytes} bytes in "
                f"{self._settings.read_timeout:g} s"
            )
        self._window_start, self._window_bytes = now, 0


def discard(response: urllib3.BaseHTTPResponse, within: float) -> None:
    """End a response whose body is not wanted: a short one is read, so that its
    connection stays alive for the next request; a long or unknown one is closed, and
    so is a short one that has not ended ``within`` seconds (it trickles: F1)."""
    length = response.headers.get("Content-Length")
    if length is not None and length.isascii() and length.isdigit() and int(length) <= DRAIN_MAX:
        until = time.monotonic() + within
        try:
            while time.monotonic() < until:
                if not response.read1(DRAIN_MAX):
                    return
        except (u3.HTTPError, OSError):
            pass
    response.close()
