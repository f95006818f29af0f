"""Fetching files of a remote repository one at a time over HTTP: urllib3 connections.

The per-object path of store/pull/http.py's Fetcher (which imports this module on
first use: a pull whose answers all go through the pipelined lane never imports
urllib3 or http.client), and the fallback of the lane for whatever is not plain.
One :class:`PerObjectFetcher` per pull. It fetches on the connection of the
caller's slot of the pull's budget (store/pull/budget.py: at most
``settings.connections`` open at once, the lane's included), kept alive; each hop of a
redirect too: a hop to another host (a mirror, a CDN) replaces the slot's connection
with one to that host, so that a halt ends its reads and the budget counts it
(attack17.md, findings 1 and 2). For each file it:

- gives up on a connect after ``connect_timeout`` and on a read after
  ``read_timeout`` seconds without a byte; a server that trickles (fewer than
  ``low_speed_bytes`` in ``read_timeout`` seconds) is given up on too, as libcurl's
  low-speed limit does for OSTree;
- retries transient failures (a refused or reset connection, a timeout, a body
  cut short, HTTP 5xx, 408 and 429) ``retries`` times, waiting ``backoff`` seconds,
  doubled each time; then fails with a NetworkError that says what happened last;
- gives up on a response whose head (status line and headers, after any number of
  ``100 Continue``) has not arrived ``read_timeout`` seconds after the request, and on
  an attempt whose heads (redirects included) take more than ``connect_timeout +
  read_timeout``: a watchdog (store/pull/deadlines.py) shuts the socket down, as a
  per-recv() timeout cannot see a head sent one byte a second;
- never retries a 404 or another 4xx: the file is not there (``status`` says so);
- follows at most ``max_redirects`` redirects, to http and https URLs only;
- refuses a body larger than the caller's limit: as soon as Content-Length says
  so, or, without one, as soon as more bytes arrive than allowed (the rest is
  never read).

This module holds the fetcher: attempts, retries, redirects, statuses. Its parts:
store/pull/watched_connections.py (urllib3's connections: connect watched by the slot,
head deadlines, 1xx heads read past), store/pull/response_bodies.py (bounded bodies
that may not trickle, error pages read to keep a connection) and
store/pull/fetch_failures.py (which failures are worth another attempt, in few words).

Library code: nothing is printed; counters feed the caller's progress.
"""

from __future__ import annotations

import http.client
import io
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import BinaryIO, TypeVar, cast

import urllib3
from urllib3 import connectionpool as u3_pool
from urllib3 import exceptions as u3
from urllib3.util import parse_url
from urllib3.util.ssl_match_hostname import CertificateError

from store.errors import CorruptObjectError, NetworkError
from store.pull.budget import Budget, Halted, Slot
from store.pull.fetch_failures import Transient, describe, describe_raw
from store.pull.response_bodies import Body, discard
from store.pull.settings import FetchSettings
from store.pull.watched_connections import (
    ATTEMPT,
    POOL_CLASSES,
    WatchedHTTPConnection,
    is_clean,
)

log = logging.getLogger(__name__)

_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 256 << 10
_SMALL = 1 << 20  # a body that says it is this small is read whole, in fewer calls
_T = TypeVar("_T")


class PerObjectFetcher:
    """GETs files below one repository URL one at a time; thread-safe."""

    def __init__(
        self,
        base_url: str,
        settings: FetchSettings,
        on_bytes: Callable[[int], None] | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.settings = settings
        self._on_bytes = on_bytes
        self._budget = Budget(settings.connections) if budget is None else budget
        self._pool = urllib3.PoolManager(  # makes connections, never holds one
            num_pools=4,
            retries=False,
            timeout=urllib3.Timeout(connect=settings.connect_timeout, read=settings.read_timeout),
            headers={"Accept-Encoding": "identity", "User-Agent": "sapwood-pull"},
        )
        self._pool.pool_classes_by_scheme = POOL_CLASSES  # heads with a deadline
        self._head_budget = settings.connect_timeout + settings.read_timeout
        parts = urllib.parse.urlsplit(self.base_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._base_pool = self._pool.connection_from_url(self.base_url)
        self._headers = dict(self._pool.headers)
        self._local = threading.local()  # .reused: the last answer came on a reused one
        self.halted = self._budget.halted  # see halt()
        self._lock = threading.Lock()
        self.requests = 0
        self.bytes = 0

    def close(self) -> None:
        self._pool.clear()
        self._budget.close()

    def halt(self) -> None:
        """Every later attempt raises Halted, a backoff wait ends, and every read
        blocked on one of the budget's connections ends at once (a shutdown)."""
        self._budget.halt()

    def url(self, relpath: str) -> str:
        return self.base_url + relpath

    def get(self, relpath: str, limit: int) -> bytes:
        """The body of ``relpath`` (at most ``limit`` bytes), retried on transient
        failures; NetworkError once they are spent, or at once for a 4xx (status set)."""
        return self.fetch(relpath, limit, lambda body: body.read())

    def fetch(self, relpath: str, limit: int, consume: Callable[[BinaryIO], _T]) -> _T:
        """``consume(body)`` of the body of ``relpath`` as a stream (never more than
        ``limit`` bytes; what ``consume`` leaves unread is never read). A transient
        failure while ``consume`` reads (a timeout, a reset, a body cut short) tries
        the whole file again; what ``consume`` raises itself (CorruptObjectError) is
        not retried, unless the body came on a reused kept-alive connection: then the
        file is asked once more at once on a new connection, not counted as an attempt.
        A server that wrote bytes unasked while the request went (another response, say:
        attack10.md, finding 4) is out of step with the requests, and its answers are
        not the ones asked for; a server that serves a wrong object costs one request
        more."""
        with self._budget.slot() as slot:
            return self._fetch_retried(relpath, limit, consume, slot)

    def _fetch_retried(
        self, relpath: str, limit: int, consume: Callable[[BinaryIO], _T], slot: Slot
    ) -> _T:
        url = self.url(relpath)
        attempt = 0
        asked_anew = False
        while True:
            if self.halted.is_set():
                raise Halted(url=url)
            try:
                return self._fetch_following(url, limit, consume, slot)
            except _OutOfStep as exc:
                if asked_anew:
                    raise exc.error from None
                log.info("%s: %s; asked anew on a new connection", url, exc.error)
                asked_anew = True
            except Transient as exc:
                if self.halted.is_set():  # the halt's shutdown broke it: not the server
                    raise Halted(url=url) from None
                if attempt >= self.settings.retries:
                    tries = f"after {attempt + 1} attempts" if attempt else "(no retries)"
                    where = f"{exc.url} (a redirect)" if exc.url else url
                    raise NetworkError(
                        f"{where}: {exc.reason} {tries}", url=exc.url or url, status=exc.status
                    ) from None
                wait = min(self.settings.backoff * 2**attempt, self.settings.max_backoff)
                log.info("%s: %s; retrying in %.2f s", url, exc.reason, wait)
                attempt += 1
                self.halted.wait(wait)

    def _fetch_following(
        self, url: str, limit: int, consume: Callable[[BinaryIO], _T], slot: Slot
    ) -> _T:
        first, seen = url, {url}
        ATTEMPT.deadline = time.monotonic() + self._head_budget
        for _ in range(self.settings.max_redirects + 1):
            try:
                response, conn = self._request(url, slot)
            except Transient as exc:
                if url != first:
                    exc.url = url  # the hop's server failed, not the remote (attack19 1)
                raise
            try:
                location = self._redirect(response, url)
                if location is None:
                    try:
                        return self._consume(response, url, limit, consume)
                    except CorruptObjectError as exc:
                        if not self._local.reused:
                            raise
                        conn.close()
                        raise _OutOfStep(exc) from None
            finally:
                if response.length_remaining != 0:  # not read to its end (or unknown)
                    conn.close()  # unread bytes must not reach the next request
                response.close()  # its hold on the socket: a closed connection's file
                # stayed open while the response lived (a 302's did, as the next hop's
                # connection was made: two open for one)
            try:  # percent-encoded as the pool would (a space, on the slot's
                # connection, is http.client's InvalidURL): "/repo/a b" -> "/repo/a%20b"
                url = parse_url(urllib.parse.urljoin(url, location)).url
                scheme = urllib.parse.urlsplit(url).scheme
            except (ValueError, u3.LocationParseError):  # "http://[::1" and the like
                raise NetworkError(f"{first}: redirected to an invalid URL", url=first) from None
            if scheme not in ("http", "https"):
                raise NetworkError(f"{first}: redirected to {url[:200]!r}, not http(s)", url=first)
            if url in seen:
                raise NetworkError(f"{first}: a redirect loop (back to {url})", url=first)
            seen.add(url)
        raise NetworkError(f"{first}: more than {self.settings.max_redirects} redirects", url=first)

    def _request(
        self, url: str, slot: Slot
    ) -> tuple[urllib3.BaseHTTPResponse, WatchedHTTPConnection]:
        """The response to a GET of ``url`` on the slot's connection, and that
        connection: the base URL's server (the usual case), or the host a redirect
        named (its pool, made on first use, makes the connection)."""
        with self._lock:
            self.requests += 1
        if url.startswith(self.base_url):
            return self._request_direct(self._base_pool, url[len(self._origin) :], slot)
        pool = self._pool.connection_from_url(url)
        return self._request_direct(pool, parse_url(url).request_uri, slot)

    def _request_direct(
        self, pool: u3_pool.HTTPConnectionPool, path: str, slot: Slot
    ) -> tuple[urllib3.BaseHTTPResponse, WatchedHTTPConnection]:
        """GET ``path`` of ``pool``'s server on the kept-alive connection of ``slot``.

        urllib3's connection, made by the pool as the pool makes its own (the same
        timeouts, TLS settings and head deadline), but used without the pool: taking a
        connection from the pool and giving it back, and its request's layers, cost as
        much CPU as the rest of fetching a small object (store/pull's benchmark fetches
        thousands), and the pull's budget counts and halts only the slots' connections.
        The slot's connection, if it is the lane's or one to another server, is closed
        first.

        As the pool does, a kept-alive connection is polled before each use (~1 us): one
        the server closed, or on which it sent bytes nobody asked for, is replaced by a
        new one. Bytes past the end of the last response (another whole response, say)
        would otherwise be read as the answer to the next request, and the pull would
        fail on an object that the server serves right (attack10.md, finding 4). A
        connection that the server closed as the request went (a reset, a broken pipe,
        nothing read) or that answers with something that is not a response head (bytes
        that came just after the poll) is asked once more at once on a new connection
        (a GET may be sent again; browsers and HTTP libraries do so for a kept-alive
        connection), not counted as an attempt."""
        server = (pool.scheme, pool.host, pool.port)
        conn = slot.conn
        if not isinstance(conn, WatchedHTTPConnection) or conn.server != server:
            conn = cast(WatchedHTTPConnection, pool._new_conn())
            conn.server = server
            slot.swap(conn)
        conn.slot = slot
        reused = conn.sock is not None
        if reused and not is_clean(conn):
            conn.close()  # the server closed it, or sent more than it was asked for
            reused = False
        try:
            try:
                response = self._exchange(conn, path)
            except (ConnectionError, ssl.SSLEOFError, http.client.BadStatusLine):
                # reset, broken pipe, closed before a response began (under TLS, a close
                # without close_notify: SSLEOFError), or no response head where one must
                # start (BadStatusLine: the server's bytes are out of step with requests)
                if not reused:
                    raise
                conn.close()  # closed by the server as the request went: once more, anew
                reused = False
                with self._lock:  # a request sent again: the report counts what went
                    self.requests += 1
                response = self._exchange(conn, path)
        except u3.HTTPError as exc:  # could not connect, timed out connecting
            conn.close()
            raise Transient(describe(exc)) from None
        except (OSError, http.client.HTTPException, CertificateError) as exc:
            conn.close()
            raise Transient(describe_raw(exc)) from None
        self._local.reused = reused  # whether the answer came on a reused connection
        return response, conn

    def _exchange(self, conn: WatchedHTTPConnection, path: str) -> urllib3.BaseHTTPResponse:
        if conn.sock is None:
            conn.timeout = self.settings.connect_timeout
            conn.connect()
        if conn.slot is not None and conn.sock is not None:
            conn.slot.watch(conn.sock)  # the TLS socket, or a reused one
        conn.timeout = self.settings.read_timeout
        conn.request(
            "GET", path, headers=self._headers, preload_content=False, decode_content=False
        )
        return conn.getresponse()

    def _redirect(self, response: urllib3.BaseHTTPResponse, url: str) -> str | None:
        """The Location of a redirect; None for a 200; errors for other statuses."""
        status = response.status
        if status in _REDIRECT_STATUS:
            location = response.headers.get("Location")
            discard(response, self.settings.read_timeout)
            if not location:
                raise NetworkError(f"{url}: HTTP {status} without a Location", url=url)
            return str(location)
        if status == 200:
            return None
        discard(response, self.settings.read_timeout)
        if status in _TRANSIENT_STATUS or status >= 500:
            raise Transient(f"HTTP {status}", status)
        raise NetworkError(f"{url}: HTTP {status}", url=url, status=status)

    def _consume(
        self,
        response: urllib3.BaseHTTPResponse,
        url: str,
        limit: int,
        consume: Callable[[BinaryIO], _T],
    ) -> _T:
        length = response.headers.get("Content-Length")
        if length is not None and length.isascii() and length.isdigit() and int(length) > limit:
            response.close()
            raise NetworkError(
                f"{url}: {int(length)} bytes, more than the {limit} allowed", url=url
            )
        raw = Body(response, url, limit, self.settings, self._count)
        try:
            if (
                length is not None
                and length.isascii()
                and length.isdigit()
                and int(length) <= _SMALL
            ):
                body = cast(BinaryIO, io.BytesIO(raw.read_all(int(length))))
            else:
                body = cast(BinaryIO, io.BufferedReader(raw, _CHUNK))
            result = consume(body)
        except u3.HTTPError as exc:  # the body's own reads say Transient already; an
            # OSError here is consume's (the disk: EIO, a spool's ENOSPC), never retried
            raise Transient(describe(exc)) from None
        finally:
            if not raw.ended:
                response.close()  # unread bytes must not reach the next request
        return result

    def _count(self, size: int) -> None:
        with self._lock:
            self.bytes += size
        if self._on_bytes is not None:
            self._on_bytes(size)


class _OutOfStep(Exception):
    """``consume`` refused a body that came on a reused kept-alive connection."""

    def __init__(self, error: CorruptObjectError) -> None:
        super().__init__(str(error))
        self.error = error
