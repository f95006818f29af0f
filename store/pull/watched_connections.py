"""urllib3's connections as a pull uses them (store/pull/per_object.py).

- The socket is made by store/pull/budget.py's ``open_socket`` and handed to the
  budget's slot that carries the connection before it connects, so that a halt ends a
  connect in progress, and later every read (``WatchedHTTPConnection.slot``).
- A response head has a deadline (:func:`head_in_time`): the read timeout, and the
  attempt's deadline for all its heads, redirects included (``ATTEMPT.deadline``); a
  watchdog (store/pull/deadlines.py) shuts the socket down when it passes, as a
  per-recv() timeout cannot see a head sent one byte a second.
- Any 1xx head (103 Early Hints) is read past.
- urllib3's warnings about heads it could not parse are debug messages: a hostile
  server could fill stderr with them, one a request.

``POOL_CLASSES`` makes a urllib3 PoolManager build its pools, and so their
connections (the same TLS settings and timeouts), of these classes.
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
from collections.abc import Callable

import urllib3
from urllib3 import connection as u3_connection
from urllib3 import connectionpool as u3_pool
from urllib3 import exceptions as u3

from store.pull.budget import Slot, open_socket, shut_down
from store.pull.deadlines import WATCHDOG
from store.pull.fetch_failures import HeadTimeout


class _HeaderDefectsQuiet(logging.Filter):
    """urllib3 logs a warning, with a traceback, for a response head it could not
    parse, and one for a head with both Content-Length and Transfer-Encoding, and goes
    on with the response (or the pull gives up on it in its own words): a hostile
    server could fill stderr with them, one a request. Kept for --debug."""

    _QUIET = ("Failed to parse headers", "Received response with both Content-Length")

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self._QUIET):
            return True
        record.levelno, record.levelname, record.exc_info = logging.DEBUG, "DEBUG", None
        return logging.getLogger().isEnabledFor(logging.DEBUG)


logging.getLogger("urllib3.connection").addFilter(_HeaderDefectsQuiet())
logging.getLogger("urllib3.response").addFilter(_HeaderDefectsQuiet())


def is_clean(conn: u3_connection.HTTPConnection) -> bool:
    """Whether a kept-alive connection may carry another request: open, with nothing
    to read before the request is sent (under TLS, no bytes decrypted and unread)."""
    pending = getattr(conn.sock, "pending", None)  # an SSLSocket's
    if pending is not None and pending() > 0:
        return False
    return bool(conn.is_connected)


ATTEMPT = threading.local()  # .deadline: when the heads of this thread's attempt are due


def head_in_time(
    conn: u3_connection.HTTPConnection, get: Callable[[], urllib3.HTTPResponse]
) -> urllib3.HTTPResponse:
    """``get()`` (the connection's getresponse), its socket shut down by the watchdog
    if the head has not arrived within the read timeout (or the attempt's deadline)."""
    sock = conn.sock
    start = time.monotonic()
    due: float | None = getattr(ATTEMPT, "deadline", None)
    if isinstance(conn.timeout, int | float):
        due = start + conn.timeout if due is None else min(due, start + conn.timeout)
    if sock is None or due is None:
        return get()
    alarm = WATCHDOG.arm(due, lambda: shut_down(sock))
    try:
        response = get()
    except BaseException as exc:
        if not WATCHDOG.disarm(alarm):
            raise HeadTimeout(_late(due - start)) from exc
        raise
    if not WATCHDOG.disarm(alarm):  # it fired as the head came: the socket is gone
        raise HeadTimeout(_late(due - start))
    return response


def _late(seconds: float) -> str:
    return f"no complete response head within {max(seconds, 0):.3g} s"


class _InformationalSkipped(http.client.HTTPResponse):
    """http.client reads past ``100 Continue`` only: any other 1xx head (103 Early
    Hints, which nginx can send) but 101 was taken for the answer, and the pull failed
    'HTTP 103' (attack14.md, finding 2). Read past them all; the head deadline bounds
    how many come."""

    def _read_status(self) -> tuple[str, int, str]:
        while True:
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if not 102 <= status < 200:
                return version, status, reason
            http.client._read_headers(self.fp)  # type: ignore[attr-defined]


def _new_watched_conn(conn: u3_connection.HTTPConnection, slot: Slot) -> socket.socket:
    """urllib3's HTTPConnection._new_conn (the same errors), the socket handed to the
    slot before it connects: a halt ends a connect in progress at once."""
    timeout = conn.timeout if isinstance(conn.timeout, int | float) else None
    try:
        sock = open_socket(conn._dns_host, conn.port, timeout, slot.watch)
    except socket.gaierror as exc:
        raise u3.NameResolutionError(conn.host, conn, exc) from exc
    except TimeoutError as exc:
        raise u3.ConnectTimeoutError(conn, f"Connection to {conn.host} timed out.") from exc
    except OSError as exc:
        raise u3.NewConnectionError(conn, f"Failed to establish a new connection: {exc}") from exc
    for option in conn.socket_options or ():
        sock.setsockopt(*option)
    return sock


class WatchedHTTPConnection(u3_connection.HTTPConnection):
    """urllib3's connection, its socket watched by the budget's slot that carries it
    (``slot``, set by the fetcher) as it connects, its head with a deadline, any 1xx
    head read past."""

    response_class = _InformationalSkipped
    slot: Slot | None = None
    server: tuple[str, str, int | None] | None = None  # scheme, host, port: the pool's

    def _new_conn(self) -> socket.socket:
        if self.slot is None:
            return super()._new_conn()
        return _new_watched_conn(self, self.slot)

    def getresponse(self) -> urllib3.HTTPResponse:  # type: ignore[override]
        return head_in_time(self, super().getresponse)


class WatchedHTTPSConnection(WatchedHTTPConnection, u3_connection.HTTPSConnection):
    """The same over TLS."""


class _HTTPPool(u3_pool.HTTPConnectionPool):
    ConnectionCls = WatchedHTTPConnection


class _HTTPSPool(u3_pool.HTTPSConnectionPool):
    ConnectionCls = WatchedHTTPSConnection


POOL_CLASSES: dict[str, type[u3_pool.HTTPConnectionPool]] = {
    "http": _HTTPPool,
    "https": _HTTPSPool,
}
