"""The HTTP fetcher alone, against a server that misbehaves on purpose: size caps,
redirects, stalls and trickles, retries."""

from __future__ import annotations

import contextlib
import http.server
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from store import NetworkError
from store.pull import FetchSettings
from store.pull.http import Fetcher

SETTINGS = FetchSettings(connect_timeout=1, read_timeout=0.5, retries=1, backoff=0.01)


def _trickle(wfile: Any, head: bytes, piece: bytes, pause: float, last: float = 8) -> None:
    """``head``, then ``piece`` every ``pause`` seconds for ``last`` seconds (or until
    the client hangs up): a response head that never ends."""
    until = time.monotonic() + last
    with contextlib.suppress(OSError):
        wfile.write(head)
        wfile.flush()
        while time.monotonic() < until:
            wfile.write(piece)
            wfile.flush()
            time.sleep(pause)


_STALLED_HEADS: dict[str, Callable[[Any], None]] = {
    "/slow-headers": lambda w: _trickle(w, b"HTTP/1.1 200 OK\r\n", b"X-A: b\r\n", 0.2),
    "/slow-status": lambda w: _trickle(w, b"H", b"T", 0.2),
    "/continue-forever": lambda w: _trickle(w, b"", b"HTTP/1.1 100 Continue\r\n\r\n", 0.01),
}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: ClassVar[dict[str, int]] = {}

    def do_GET(self) -> None:
        _Handler.hits[self.path] = _Handler.hits.get(self.path, 0) + 1
        if self.path == "/ok":
            self._send(b"hello")
        elif self.path == "/endless":  # no Content-Length: ends when the connection does
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            with contextlib.suppress(OSError):  # until the client hangs up
                while True:
                    self.wfile.write(b"x" * 65536)
        elif self.path == "/claims-huge":
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 40))
            self.end_headers()
        elif self.path == "/loop":
            self._redirect("/loop2")
        elif self.path == "/loop2":
            self._redirect("/loop")
        elif self.path == "/to-ftp":
            self._redirect("ftp://127.0.0.1/x")
        elif self.path == "/moved":
            self._redirect("/ok")
        elif self.path == "/sized":  # kept alive, 5000 bytes
            self._send(b"y" * 5000)
        elif self.path == "/then-close":  # closes the connection without saying so
            self._send(b"bye")
            self.close_connection = True
        elif self.path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            time.sleep(10)
        elif self.path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        elif self.path in _STALLED_HEADS:  # the head trickles, never ends (for 8 s)
            _STALLED_HEADS[self.path](self.wfile)
        elif self.path == "/moved-slowly":  # a short redirect body, one byte at a time
            head = b"HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 1000\r\n\r\n"
            _trickle(self.wfile, head, b"x", 0.2)
        elif self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"x" * 10)
        else:
            self._send(b"not here", 404)

    def _send(self, body: bytes, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _get(url: str, path: str, limit: int = 1 << 20) -> bytes:
    with Fetcher(url, SETTINGS) as fetcher:
        return fetcher.get(path, limit)


def test_a_body_and_a_redirect_are_fetched(url: str) -> None:
    assert _get(url, "ok") == b"hello"
    assert _get(url, "moved") == b"hello"


def test_a_404_is_not_retried(url: str) -> None:
    _Handler.hits.clear()
    with pytest.raises(NetworkError) as failed:
        _get(url, "missing")
    assert failed.value.status == 404 and _Handler.hits["/missing"] == 1


def test_a_body_larger_than_allowed_is_cut_off(url: str) -> None:
    started = time.monotonic()
    with pytest.raises(NetworkError, match="more than the 1048576 bytes allowed"):
        _get(url, "endless")
    with pytest.raises(NetworkError, match="more than the 1048576 allowed"):
        _get(url, "claims-huge")
    assert time.monotonic() - started < 2


def test_a_body_left_unread_never_reaches_the_next_request(url: str) -> None:
    """The thread's kept-alive connection is closed when a body was not read to its
    end (refused by its Content-Length, or only partly consumed): its bytes would
    otherwise be read as the next response (a failure, no retry here to hide it)."""
    with Fetcher(url, FetchSettings(connect_timeout=1, read_timeout=1, retries=0)) as fetcher:
        assert fetcher.fetch("sized", 1 << 20, lambda body: body.read(10)) == b"y" * 10
        assert fetcher.get("ok", 100) == b"hello"
        with pytest.raises(NetworkError, match="more than the 100 allowed"):
            fetcher.get("sized", 100)
        assert fetcher.get("ok", 100) == b"hello"
        assert fetcher.get("sized", 1 << 20) == b"y" * 5000
        assert fetcher.get("ok", 100) == b"hello"


def test_a_kept_alive_connection_closed_by_the_server_is_replaced_at_once(url: str) -> None:
    """A server that closes a connection after a response without saying so: the
    next request, sent on it before the close is seen, is sent again on a new
    connection, and no attempt is spent (none is left here)."""
    _Handler.hits.clear()
    with Fetcher(url, FetchSettings(connect_timeout=1, read_timeout=1, retries=0)) as fetcher:
        for _ in range(3):
            assert fetcher.get("then-close", 100) == b"bye"
        assert fetcher.get("ok", 100) == b"hello"
    assert _Handler.hits == {"/then-close": 3, "/ok": 1}


def test_redirects_are_bounded(url: str) -> None:
    with pytest.raises(NetworkError, match="redirect loop"):
        _get(url, "loop")
    with pytest.raises(NetworkError, match="not http"):
        _get(url, "to-ftp")


@pytest.mark.parametrize("path", ["stall", "trickle", "short"])
def test_a_stalled_trickling_or_short_body_fails_after_the_retries(url: str, path: str) -> None:
    _Handler.hits.clear()
    started = time.monotonic()
    with pytest.raises(NetworkError, match="after 2 attempts"):
        _get(url, path)
    assert _Handler.hits[f"/{path}"] == 2
    assert time.monotonic() - started < 2 * (SETTINGS.read_timeout + 1) + 1


@pytest.mark.parametrize("path", sorted(_STALLED_HEADS))
def test_a_response_head_that_never_ends_fails_after_the_retries(url: str, path: str) -> None:
    """F1 of the security review: urllib3's read timeout is per recv(), so a server that
    sent its status line or headers a byte at a time (or "100 Continue" for ever) held
    pull for ever; the whole head now has a deadline of read_timeout."""
    _Handler.hits.clear()
    started = time.monotonic()
    with pytest.raises(NetworkError, match="after 2 attempts") as failed:
        _get(url, path.lstrip("/"))
    assert "response head" in str(failed.value)
    assert _Handler.hits[path] == 2
    assert time.monotonic() - started < 2 * (SETTINGS.read_timeout + 0.5) + 1


def test_a_redirect_body_that_trickles_is_not_waited_for(url: str) -> None:
    """F1: the body of a redirect (or an error page) said to be short was read whole to
    keep its connection, one recv() at a time with no deadline: 1000 bytes at 5 a
    second held the fetch for 200 s. It is now given read_timeout, then closed."""
    started = time.monotonic()
    assert _get(url, "moved-slowly") == b"hello"
    assert time.monotonic() - started < SETTINGS.read_timeout + 1.5


def test_a_tls_handshake_that_trickles_fails_after_the_retries() -> None:
    """F1 under TLS (held, kept so that it stays so): a server sending its ServerHello a
    byte at a time. CPython's ssl bounds the whole handshake by the socket's timeout
    (connect_timeout), unlike a plain recv(); no watchdog is needed there."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                accepted.append(conn)
                threading.Thread(target=_trickle_hello, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    started = time.monotonic()
    try:
        with pytest.raises(NetworkError, match="after 2 attempts"):
            _get(f"https://127.0.0.1:{listener.getsockname()[1]}", "x")
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
    assert len(accepted) == 2
    assert time.monotonic() - started < 2 * (SETTINGS.connect_timeout + SETTINGS.read_timeout) + 1


def test_a_certificate_nobody_vouches_for_is_refused(tmp_path: Path) -> None:
    """The fetcher's own connections verify the server's certificate as urllib3's pool
    does: a self-signed one is refused, and the error says it is TLS."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subprocess.run(
        [*request, "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(NetworkError, match=r"TLS error: .*certificate verify failed"):
            _get(f"https://127.0.0.1:{server.server_address[1]}", "ok")
    finally:
        server.shutdown()
        server.server_close()


def _trickle_hello(conn: socket.socket) -> None:
    """A TLS record header announcing 16 KiB, then a byte every 0.2 s (for 8 s)."""
    with contextlib.suppress(OSError):
        conn.recv(65536)  # the ClientHello
        until = time.monotonic() + 8
        conn.sendall(b"\x16\x03\x03\x40\x00")
        while time.monotonic() < until:
            conn.sendall(b"\x02")
            time.sleep(0.2)


def test_settings_from_the_environment() -> None:
    env = {"SAPWOOD_HTTP_TIMEOUT": "2.5", "SAPWOOD_HTTP_RETRIES": "3", "SAPWOOD_PULL_BATCH": "7"}
    settings = FetchSettings.from_environ(env)
    assert (settings.read_timeout, settings.connect_timeout) == (2.5, 2.5)
    assert (settings.retries, settings.batch_objects) == (3, 7)
    with pytest.raises(Exception, match="not a number"):
        FetchSettings.from_environ({"SAPWOOD_HTTP_RETRIES": "many"})


def test_the_watchdog_runs_what_is_due_and_nothing_disarmed() -> None:
    from store.pull.deadlines import Watchdog

    watchdog, fired, ran = Watchdog(), threading.Event(), []
    base = time.monotonic()  # room to arm and disarm 3000 on a busy machine before any is due
    cancelled = [watchdog.arm(base + 1.0, lambda: ran.append(1)) for _ in range(3000)]
    assert all(watchdog.disarm(alarm) for alarm in cancelled)
    due = watchdog.arm(base + 1.1, fired.set)
    assert fired.wait(5) and not watchdog.disarm(due)
    assert ran == []  # the disarmed ones, due before it, never ran
    assert len(watchdog._heap) < 1100  # the disarmed are dropped, not kept till due
