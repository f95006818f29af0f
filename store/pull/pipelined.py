"""HTTP/1.1 pipelining for the common case of a pull: many GETs on one connection.

The per-object path (store/pull/http.py's ``Fetcher.fetch``) asks for one file, waits
for its answer, then asks for the next: one round trip, and with eight threads eight
hand-overs of the interpreter lock around every system call, per object. A lane
sends a window of requests at once on one kept-alive connection and reads the
answers from one buffer, refilling the window as they come.

The lane handles the common case only, strictly, and never decides an error itself:
a status line ``HTTP/1.1 200`` (after any 1xx heads but 101, read past within the same
deadline), a head of at most ``MAX_HEAD`` bytes, a
Content-Length (at most the caller's limit), no Transfer-Encoding. A 4xx (but 408
and 429) is final, as on the per-object path, which never asks again: the same
NetworkError is raised here (a missing object is asked once). Anything else (an
other status, a malformed or late head, a body that trickles, EOF, a reset, a body
that ``consume`` refuses with CorruptObjectError) ends the lane's work on that
connection (closed), and :meth:`Lane.fetch` stops yielding: the caller asks for the
object it failed on, and every one after it, through the per-object path, which
retries, follows redirects and raises the proper errors. ``Connection: close``, or a
connection closed right after a whole answer, is no failure: the rest goes on a new
connection. A server that fails the lane before its first answer (it does not
pipeline), times out, or sends what the lane cannot read (chunked bodies, HTTP/1.0)
has the lane turned off for the rest of the pull, as has one that failed it
``MAX_FAILURES`` times.

Connections are made with socket and ssl directly (the settings' connect and read
timeouts, certificates and host names checked as urllib3 does), so that a pull whose
answers are all plain never imports urllib3 or http.client. A head has a deadline
(``read_timeout`` from when it is awaited: the socket's timeout is cut to what is
left, so a head sent a byte a second ends in time) and a body the low-speed rule of
the per-object path (fewer than ``low_speed_bytes`` in ``read_timeout`` seconds).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import select
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO, TypeVar, cast

from store.errors import CorruptObjectError, NetworkError
from store.pull.budget import Budget, Slot, open_socket
from store.pull.budget import Halted as Halted  # where store/pull/batches.py takes it
from store.pull.settings import FetchSettings

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_R = TypeVar("_R")

WINDOW = 32  # requests in flight on one connection
MAX_HEAD = 64 << 10  # bytes of a response head, status line and headers
SMALL = 1 << 20  # a body up to this size is read whole and handed over as bytes
MAX_FAILURES = 8  # failures of the lane (of any kind) before it is turned off
_RECV = 256 << 10
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux's (see receive)
_SAFE_TARGET = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@/%-]*")
_STATUS = re.compile(rb"HTTP/1\.1 ([0-9]{3})(?: [\x20-\x7e\x80-\xff]*)?")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class _End(Exception):
    """The lane's work on a connection ends, for ``reason`` (logged), of a ``kind``:

    - "clean": no failure (Connection: close, a close right after a whole answer):
      the rest goes on a new connection;
    - "broken": the connection failed (a reset, EOF within an answer): on a connection
      that rested, before any answer, the rest is asked once more on a new one;
    - "object": this answer is not for the lane (an other status, too large, refused);
    - "slow": a head late, a body that trickles: a failure, which turns the lane
      off only for a server that never answered two pipelined requests on one
      connection (it may not pipeline at all: a timeout each piece of work otherwise),
      or as the ``MAX_FAILURES``-th (one slow object, a cold disk or a cache miss,
      turned it off for the whole pull: review12.md, finding 7);
    - "fatal": the lane cannot work with this server (a malformed head, chunked
      bodies, HTTP/1.0): off for the rest of the pull.
    """

    def __init__(self, reason: str, kind: str = "broken") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class _Target:
    """Where the lane's requests go: host, port, TLS, the Host header, the base path."""

    def __init__(self, base_url: str) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.tls else 80)
        default = (self.tls and self.port == 443) or (not self.tls and self.port == 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if default else f"{host}:{self.port}"
        self.path = parts.path or "/"
        self.url = base_url

    @staticmethod
    def of(base_url: str) -> _Target | None:
        """The target of ``base_url``, or None when the lane is not for it (a scheme
        other than http(s), credentials in the URL, characters a request line would
        need escaped): the per-object path alone then."""
        try:
            parts = urllib.parse.urlsplit(base_url)
            parts.port  # noqa: B018  (a bad port raises here)
        except ValueError:
            return None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        if parts.username is not None or parts.query or parts.fragment:
            return None
        if not _SAFE_TARGET.fullmatch(parts.path) or not parts.hostname.isascii():
            return None
        return _Target(base_url)


class _Connection:
    """One socket of the lane, with the bytes read from it and not yet used."""

    def __init__(
        self,
        target: _Target,
        settings: FetchSettings,
        context: ssl.SSLContext | None,
        slot: Slot,
    ) -> None:
        self.settings = settings
        sock = open_socket(target.host, target.port, settings.connect_timeout, slot.watch)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is not None:  # the handshake is bounded by the socket's timeout,
                # and watched from its start: a halt ends it at once
                sock = context.wrap_socket(
                    sock, server_hostname=target.host, do_handshake_on_connect=False
                )
                slot.watch(sock)
                sock.do_handshake()
            sock.settimeout(settings.read_timeout)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.buffer = bytearray()
        self.answered = 0  # whole answers read on this connection
        self.kept = False  # kept after the 4xx that ended a call (its page read)
        self.closed = False
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN | select.POLLPRI)

    def idle_clean(self) -> bool:
        """Whether a connection that rested may carry more requests: nothing came on it
        unasked (no bytes, no EOF) since its last answer."""
        if self.closed or self.buffer:
            return False
        pending = getattr(self.sock, "pending", None)
        if pending is not None and pending() > 0:
            return False
        try:
            return not self._poll.poll(0)
        except OSError:
            return False

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (OSError, ValueError) as exc:
            raise _End(f"sending: {_describe(exc)}") from None

    def receive(self, timeout: float | None = None) -> int:
        """Read what has come into the buffer; its count, 0 at EOF. _End on a timeout
        (``timeout`` seconds if given, else the read timeout) or an error."""
        data = self._received(lambda: self.sock.recv(_RECV), timeout)
        self.buffer += data
        return len(data)

    def receive_into(self, view: memoryview) -> int:
        """Read what has come straight into ``view`` (the buffer being empty: a large
        body's bytes are copied once, not from a new bytes object into the buffer and
        out of it again); its count, 0 at EOF. _End as :meth:`receive`."""
        return self._received(lambda: self.sock.recv_into(view), None)

    def _received(self, read: Callable[[], _R], timeout: float | None) -> _R:
        try:
            if timeout is not None:
                self.sock.settimeout(max(timeout, 0.001))
            # acknowledge at once: a server that leaves Nagle on (nginx with sendfile,
            # answering pipelined requests) holds an answer's tail back until what came
            # before is acknowledged, and a pipeline looks interactive to Linux, which
            # then delays acknowledgements by up to 40 ms (docs/decisions.md, session 14)
            if _QUICKACK is not None:
                self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            return read()
        except TimeoutError:
            raise _End("timed out reading", "slow") from None
        except (OSError, ValueError) as exc:
            raise _End(_describe(exc)) from None
        finally:
            if timeout is not None:  # a socket closed meanwhile (EBADF): the _End says so
                with contextlib.suppress(OSError, ValueError):
                    self.sock.settimeout(self.settings.read_timeout)

    @property
    def is_connected(self) -> bool:
        """Worth keeping for the next fetch (whether it rested clean is checked then)."""
        return not self.closed

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()


class _Speed:
    """The per-object path's low-speed rule for a body: at least ``low_speed_bytes`` in
    every ``read_timeout`` seconds."""

    __slots__ = ("_bytes", "_settings", "_start")

    def __init__(self, settings: FetchSettings) -> None:
        self._settings = settings
        self._start = time.monotonic()
        self._bytes = 0

    def check(self, size: int) -> None:
        if size == 0:
            raise _End("the body ended before its Content-Length")
        self._bytes += size
        now = time.monotonic()
        if now - self._start < self._settings.read_timeout:
            return
        if self._bytes < self._settings.low_speed_bytes:
            raise _End("the body trickles", "slow")
        self._start, self._bytes = now, 0


class _Head:
    """A response head the lane accepts: its status, Content-Length, Connection: close."""

    __slots__ = ("close", "length", "status")

    def __init__(self, status: int, length: int | None, close: bool) -> None:
        self.status = status
        self.length = length
        self.close = close


def parse_head(head: bytes) -> _Head:
    """The head's facts; _End ("fatal": the lane cannot read this server's answers)
    for anything but a plain HTTP/1.1 head with one Content-Length value (for a 200)
    and no Transfer-Encoding."""
    lines = head.split(b"\r\n")
    status = _STATUS.fullmatch(lines[0])
    if status is None:
        raise _End(f"not an HTTP/1.1 status line: {lines[0][:60]!r}", "fatal")
    length: int | None = None
    close = False
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name) or b"\n" in value or b"\r" in value:
            raise _End(f"a malformed header line: {line[:60]!r}", "fatal")
        name = name.lower()
        value = value.strip(b" \t")
        if name == b"content-length":
            if not (value.isdigit() and len(value) <= 18) or (
                length is not None and length != int(value)
            ):
                raise _End(f"Content-Length {value[:30]!r}", "fatal")
            length = int(value)
        elif name == b"transfer-encoding":
            raise _End(f"Transfer-Encoding {value[:30]!r}", "fatal")
        elif name == b"connection":
            close = close or b"close" in (t.strip(b" \t").lower() for t in value.split(b","))
    code = int(status.group(1))
    if code == 200 and length is None:
        raise _End("an answer without a Content-Length", "fatal")
    return _Head(code, length, close)


class _Stream(io.RawIOBase):
    """A large body read from the connection as ``consume`` asks: never past its
    Content-Length, given up on when it trickles."""

    def __init__(self, conn: _Connection, length: int, count: Callable[[int], None]) -> None:
        super().__init__()
        self._conn = conn
        self.left = length
        self._count = count
        self._speed = _Speed(conn.settings)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.left == 0:
            return 0
        conn = self._conn
        wanted = min(len(buffer), self.left)
        if conn.buffer:  # what came with the head, or after the answer before
            size = min(wanted, len(conn.buffer))
            with memoryview(conn.buffer) as came:
                buffer[:size] = came[:size]
            del conn.buffer[:size]
        else:
            with memoryview(buffer) as view:
                size = conn.receive_into(view[:wanted])
            self._speed.check(size)
        self.left -= size
        self._count(size)
        return size

    def close(self) -> None:  # the connection is the lane's: never closed from here
        super().close()


class Lane:
    """Pipelined GETs below one base URL, on the connection of the caller's slot of
    the pull's budget (store/pull/budget.py), kept alive."""

    def __init__(
        self,
        target: _Target,
        settings: FetchSettings,
        budget: Budget,
        count_requests: Callable[[int], None],
        count_bytes: Callable[[int], None],
    ) -> None:
        self._target = target
        self._settings = settings
        self._halted = budget.halted
        self._count_requests = count_requests
        self._count_bytes = count_bytes
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._failures = 0
        self._pipelines = False  # the server answered two pipelined requests once
        self.off = False  # turned off for the rest of the pull

    @staticmethod
    def of(
        base_url: str,
        settings: FetchSettings,
        budget: Budget,
        count_requests: Callable[[int], None],
        count_bytes: Callable[[int], None],
    ) -> Lane | None:
        """A lane for ``base_url``, or None when it is not for the lane (see _Target)."""
        target = _Target.of(base_url)
        if target is None:
            return None
        return Lane(target, settings, budget, count_requests, count_bytes)

    def halt(self) -> None:
        """Off for good (the budget's halt ends what runs on its connections)."""
        self.off = True

    def fetch(
        self,
        relpaths: list[str],
        limit: int,
        consume: Callable[[int, BinaryIO], _T],
        slot: Slot,
    ) -> Iterator[_T]:
        """``consume(i, body)`` of each file of ``relpaths``, in order, as the answers
        come, on the connection of ``slot``. Stops early (fewer results than files)
        when the lane cannot go on: the caller fetches the rest another way (all of
        them if a path is not one a request line can carry as it is)."""
        if not all(_SAFE_TARGET.fullmatch(relpath) for relpath in relpaths):
            return
        done = 0
        asked_anew = False
        while done < len(relpaths) and not self.off:
            conn = self._connection(slot)
            if conn is None:
                return
            rested = conn.answered > 0
            before = done
            try:
                for result in self._pipeline(conn, relpaths, done, limit, consume):
                    done += 1
                    yield result
                return
            except _End as end:
                slot.swap(None)
                answers = done - before
                if end.kind == "clean" and answers:
                    if answers == 1 and done < len(relpaths):  # one answer a connection
                        self._failed(end, fatal=False)
                    continue
                if end.kind in ("broken", "clean") and rested and not answers and not asked_anew:
                    asked_anew = True  # closed as it rested: once more on a new one
                    continue
                first = not rested and not answers and end.kind in ("broken", "clean")
                slow = end.kind == "slow" and not self._pipelines
                self._failed(end, fatal=end.kind == "fatal" or first or slow)
                return
            except NetworkError:  # a 4xx: the connection is kept if its page was read
                if not conn.kept:
                    slot.swap(None)
                raise
            except BaseException:
                slot.swap(None)
                raise

    def _pipeline(
        self,
        conn: _Connection,
        relpaths: list[str],
        start: int,
        limit: int,
        consume: Callable[[int, BinaryIO], _T],
    ) -> Iterator[_T]:
        sent = start
        conn.kept = False
        for index in range(start, len(relpaths)):
            if sent - index <= WINDOW // 2 and sent < len(relpaths):
                more = min(len(relpaths), index + WINDOW)
                self._count_requests(more - sent)
                conn.send(self._requests(relpaths[sent:more]))
                sent = more
            due = time.monotonic() + self._settings.read_timeout
            head = self._head(conn, due)
            while 100 <= head.status < 200 and head.status != 101:
                head = self._head(conn, due)  # 100 Continue, 103 Early Hints: read past
            if head.status != 200:
                if 400 <= head.status < 500 and head.status not in (408, 429):
                    url = self._target.url + relpaths[index]  # final: as the per-object
                    self._read_error_page(conn, head, sent - index - 1)
                    raise NetworkError(f"{url}: HTTP {head.status}", url=url, status=head.status)
                raise _End(f"HTTP {head.status}", "object")
            assert head.length is not None
            if head.length > limit:
                raise _End(f"{head.length} bytes, more than the {limit} allowed", "object")
            result = self._body(conn, index, head.length, consume)
            conn.answered += 1
            if index > start:
                self._pipelines = True  # sent with the first, in one window
            yield result
            if head.close:
                raise _End("Connection: close", "clean")
        if conn.buffer:  # bytes nobody asked for: never read as another answer
            raise _End("bytes past the last answer", "clean")

    def _read_error_page(self, conn: _Connection, head: _Head, unanswered: int) -> None:
        """Keep the connection of an expected 4xx (a .commitmeta, summary.sig: 404 for
        an unsigned commit or summary) by reading its small page (``conn.kept``): a
        reconnect each otherwise (review12.md, finding 5). Only for the last request in
        flight (the answers after it would be read for nothing), a page of at most
        MAX_HEAD bytes, no Connection: close, read within the read timeout."""
        length = head.length
        if unanswered or head.close or length is None or length > MAX_HEAD:
            return
        due = time.monotonic() + self._settings.read_timeout
        try:
            while len(conn.buffer) < length:
                left = due - time.monotonic()
                if left <= 0 or not conn.receive(left):
                    return
        except _End:
            return
        del conn.buffer[:length]
        if conn.buffer:  # bytes nobody asked for
            return
        conn.answered += 1
        conn.kept = True

    def _requests(self, relpaths: list[str]) -> bytes:
        target = self._target
        return "".join(
            f"GET {target.path}{relpath} HTTP/1.1\r\nHost: {target.host_header}\r\n"
            "Accept-Encoding: identity\r\nUser-Agent: sapwood-pull\r\n\r\n"
            for relpath in relpaths
        ).encode("ascii")

    def _head(self, conn: _Connection, due: float) -> _Head:
        """The next head, whole by ``due`` (time.monotonic())."""
        scanned = 0
        while True:
            buffer = conn.buffer
            end = buffer.find(b"\r\n\r\n", max(scanned - 3, 0), MAX_HEAD + 4)
            if end >= 0:
                head = bytes(buffer[:end])
                del buffer[: end + 4]
                return parse_head(head)
            if len(buffer) > MAX_HEAD:
                raise _End(f"a head longer than {MAX_HEAD} bytes", "fatal")
            if buffer.find(b"\n\n", max(scanned - 1, 0)) >= 0:
                raise _End("a head whose lines end in a bare LF", "fatal")
            scanned = len(buffer)
            left = due - time.monotonic()
            if left <= 0:
                raise _End("no complete response head in time", "slow")
            if not conn.receive(left if left < self._settings.read_timeout else None):
                if buffer:
                    raise _End("the connection closed within a head")
                raise _End("the server closed the connection", "clean")

    def _body(
        self, conn: _Connection, index: int, length: int, consume: Callable[[int, BinaryIO], _T]
    ) -> _T:
        if length <= SMALL:
            if len(conn.buffer) < length:
                speed = _Speed(self._settings)
                while len(conn.buffer) < length:
                    speed.check(conn.receive())
            with memoryview(conn.buffer) as came:  # one copy (a slice of it made two)
                data = bytes(came[:length])
            del conn.buffer[:length]
            self._count_bytes(length)
            return self._consume(consume, index, cast(BinaryIO, io.BytesIO(data)))
        stream = _Stream(conn, length, self._count_bytes)
        result = self._consume(consume, index, cast(BinaryIO, io.BufferedReader(stream, _RECV)))
        if stream.left:  # what consume left unread is never read
            raise _End("a body not read to its end", "clean")
        return result

    def _consume(self, consume: Callable[[int, BinaryIO], _T], index: int, body: BinaryIO) -> _T:
        try:
            return consume(index, body)
        except CorruptObjectError as exc:
            raise _End(f"refused: {exc}", "object") from None

    def _connection(self, slot: Slot) -> _Connection | None:
        """The slot's connection if it is the lane's and rested clean, else a new one
        (any other closed); None (the lane stops for this call) if none can be made."""
        conn = slot.conn
        if isinstance(conn, _Connection) and conn.idle_clean():
            slot.watch(conn.sock)
            return conn
        slot.swap(None)
        try:
            conn = _Connection(self._target, self._settings, self._tls_context(), slot)
        except (OSError, ValueError) as exc:  # refused, timed out, a TLS failure: off, as
            # each piece of work would pay the connect timeout again (attack14.md, 4)
            self._failed(_End(f"could not connect ({_describe(exc)})", "fatal"), fatal=True)
            return None
        slot.swap(conn)
        if self.off:  # halted (or turned off) while it connected
            slot.swap(None)
            return None
        return conn

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self._target.tls:
            return None
        with self._lock:
            if self._context is None:
                import ssl  # here: a plain-HTTP pull never needs it

                self._context = ssl.create_default_context()
            return self._context

    def _failed(self, end: _End, fatal: bool) -> None:
        if self._halted.is_set():  # a shutdown's EOF, not the server's fault
            log.debug("pipelined fetch ended: the pull stops (%s)", end.reason)
            return
        with self._lock:
            self._failures += 1
            if (fatal or self._failures >= MAX_FAILURES) and not self.off:
                self.off = True
                log.info("pipelined fetches turned off for this pull: %s", end.reason)
            else:
                log.info("pipelined fetches: %s; the rest one by one", end.reason)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"[:200]
