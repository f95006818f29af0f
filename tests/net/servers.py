"""The servers of the network tests: Debian's nginx, and a server that misbehaves.

- ``Nginx``: the real web server an archive repository is published with, started by the
  test as its own process on 127.0.0.1 with a config the test writes (no /etc/nginx, its
  pid, error and access logs in the test's directory, keep-alive on). Its access log has
  one line per request, ``METHOD URI STATUS BYTES CONNECTION``, which the tests count.
- ``TamperingServer``: serves the same directory from Python (threads, HTTP/1.1,
  keep-alive) but, for the paths a ``Rule`` matches, misbehaves in one of the ways the
  issue's bad-input list names.
- ``RawSocketServer``: the base of the pipelining tests' servers (tests/net/
  test_pipelined*.py), which read requests as they come off a socket and answer
  with whatever bytes a test says.
- ``trusted_tls`` and ``serve_http``: an HTTPS (or HTTP) server of a test's own
  handler on 127.0.0.1, with a certificate the test's fetchers trust.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Self

import pytest

NGINX = "/usr/sbin/nginx"
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Request:
    """One line of nginx's access log."""

    method: str
    path: str
    status: int
    size: int
    connection: int  # nginx's serial number of the TCP connection it came on


_CONFIG = """\
daemon off;
master_process off;
pid {work}/nginx.pid;
error_log {work}/error.log info;
events {{ worker_connections 512; }}
http {{
    log_format counted '$request_method $uri $status $body_bytes_sent $connection';
    access_log {work}/access.log counted;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 60s;
    keepalive_requests 100000;
    server {{
        listen {host}:{port};
        root {root};
        autoindex off;
        location / {{ }}
    }}
}}
"""


class Nginx:
    """Debian's nginx serving ``root`` on 127.0.0.1 until ``stop()``.

    ``master_process off``: one process, running as the test's user (as root, no
    switch to www-data, which could not enter the test's 0700 directories).
    """

    def __init__(self, root: Path, work: Path) -> None:
        self.root = root
        self.work = work
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    @property
    def access_log(self) -> Path:
        return self.work / "access.log"

    def start(self) -> Nginx:
        self.work.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # a free port can be taken between the look and nginx's bind
            self.port = free_port()
            if self._start_on(self.port):
                return self
        raise AssertionError(f"nginx did not start: {self.error_log()}")

    def _start_on(self, port: int) -> bool:
        config = self.work / "nginx.conf"
        config.write_text(
            _CONFIG.format(work=self.work, host=HOST, port=port, root=self.root.resolve())
        )
        self.process = subprocess.Popen(
            [NGINX, "-p", str(self.work), "-e", str(self.work / "error.log"), "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.process.poll() is None:
            if _listening(port):
                return True
            time.sleep(0.02)
        self.stop()
        return False

    def error_log(self) -> str:
        path = self.work / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """SIGQUIT (nginx's graceful stop), then SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def requests(self) -> list[Request]:
        """Every request logged so far, oldest first."""
        if not self.access_log.exists():
            return []
        requests = []
        text = self.access_log.read_text()
        for line in text[: text.rfind("\n") + 1].splitlines():  # a line nginx is writing: later
            method, path, status, size, connection = line.split(" ")
            requests.append(Request(method, path, int(status), int(size), int(connection)))
        return requests

    def clear_log(self) -> None:
        """Forget the requests logged so far (nginx keeps appending to the same file)."""
        self.access_log.write_bytes(b"")  # truncate in place: nginx's O_APPEND fd stays valid

    def count(self, pattern: str) -> int:
        """How many logged requests' paths match the regular expression ``pattern``."""
        regex = re.compile(pattern)
        return sum(1 for r in self.requests() if regex.search(r.path))


# ----- the tampering server ------------------------------------------------------------------
Behaviour = Literal[
    "wrong-bytes",  # the right length, one byte flipped
    "truncate",  # Content-Length of the whole file, half of it sent, connection closed
    "stall",  # headers and half the body, then nothing (until the server stops)
    "404",
    "500",
    "huge",  # the file, then far more bytes (no Content-Length), until the client leaves
    "garbage",  # bytes that are no object, summary or superblock at all
    "redirect-loop",  # 302 to the same path, for ever
]

HUGE_LIMIT = 1 << 30  # what "huge" sends at most, if the client never stops reading
GARBAGE = bytes((i * 97 + 13) % 256 for i in range(4096))


@dataclass
class Rule:
    """Paths matching ``pattern`` (a regular expression searched in the URL path) get
    ``behaviour``: for the first ``times`` requests to each path, or always (None)."""

    pattern: str
    behaviour: Behaviour
    times: int | None = None
    seen: Counter[str] = field(default_factory=Counter)

    def applies(self, path: str) -> bool:
        if not re.search(self.pattern, path):
            return False
        self.seen[path] += 1
        return self.times is None or self.seen[path] <= self.times


class TamperingServer:
    """Serves ``root`` like a static web server, except where a rule says otherwise."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.rules: list[Rule] = []
        self.log: list[tuple[str, int | str]] = []  # (path, status or behaviour)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd = _Server((HOST, 0), _handler_for(self))
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(  # a short poll: stop() returns at once
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def start(self) -> TamperingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def misbehave(self, pattern: str, behaviour: Behaviour, times: int | None = None) -> Rule:
        rule = Rule(pattern, behaviour, times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def behaved(self) -> None:
        """From now on, serve everything as it is."""
        with self._lock:
            self.rules.clear()

    def rule_for(self, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.applies(path):
                    return rule
        return None

    def record(self, path: str, what: int | str) -> None:
        with self._lock:
            self.log.append((path, what))

    def requested(self, pattern: str) -> list[tuple[str, int | str]]:
        regex = re.compile(pattern)
        with self._lock:
            return [entry for entry in self.log if regex.search(entry[0])]


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _handler_for(server: TamperingServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(_TamperingHandler):
        owner = server

    return Handler


class _TamperingHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real server
    owner: TamperingServer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read ``owner.log``."""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        rule = self.owner.rule_for(path)
        body = self._file(path)
        if rule is None:
            self._plain(path, body)
            return
        self.owner.record(path, rule.behaviour)
        _BEHAVIOURS[rule.behaviour](self, path, body)

    def _file(self, path: str) -> bytes | None:
        target = (self.owner.root / path.lstrip("/")).resolve()
        if not target.is_relative_to(self.owner.root) or not target.is_file():
            return None
        return target.read_bytes()

    def _plain(self, path: str, body: bytes | None) -> None:
        if body is None:
            self.owner.record(path, 404)
            self._status(404)
            return
        self.owner.record(path, 200)
        self._send(200, body)

    def _status(self, code: int) -> None:
        self._send(code, f"{code}\n".encode())

    def _send(self, code: int, body: bytes, length: int | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _hang_up(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _wrong_bytes(handler: _TamperingHandler, path: str, body: bytes | None) -> None:
    data = bytearray(body or GARBAGE)
    data[len(data) // 2] ^= 0xFF
    handler._send(200, bytes(data))


def _truncate(handler: _TamperingHandler, path: str, body: bytes | None) -> None:
    data = body or GARBAGE
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data[: len(data) // 2])
    handler.wfile.flush()
    handler._hang_up()


def _stall(handler: _TamperingHandler, path: str, body: bytes | None) -> None:
    data = body or GARBAGE
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data[: len(data) // 2])
    handler.wfile.flush()
    handler.owner.stopping.wait(120)
    handler._hang_up()


def _huge(handler: _TamperingHandler, path: str, body: bytes | None) -> None:
    handler.send_response(200)
    handler.send_header("Connection", "close")
    handler.end_headers()
    chunk = b"\0" * (1 << 16)
    sent = 0
    try:
        handler.wfile.write(body or b"")
        while sent < HUGE_LIMIT and not handler.owner.stopping.is_set():
            handler.wfile.write(chunk)
            sent += len(chunk)
    except OSError:
        pass  # the client stopped reading: what it should do
    handler._hang_up()


def _garbage(handler: _TamperingHandler, path: str, body: bytes | None) -> None:
    handler._send(200, GARBAGE)


def _redirect_loop(handler: _TamperingHandler, path: str, body: bytes | None) -> None:
    handler.send_response(302)
    handler.send_header("Location", path)
    handler.send_header("Content-Length", "0")
    handler.end_headers()


_BEHAVIOURS = {
    "wrong-bytes": _wrong_bytes,
    "truncate": _truncate,
    "stall": _stall,
    "404": lambda h, path, body: h._status(404),
    "500": lambda h, path, body: h._status(500),
    "huge": _huge,
    "garbage": _garbage,
    "redirect-loop": _redirect_loop,
}


def iter_object_paths(repo: Path, suffix: str) -> Iterator[str]:
    """URL paths (``/objects/ab/cd….suffix``) of an archive repository's object files."""
    for path in sorted((repo / "objects").glob(f"*/*.{suffix}")):
        yield "/" + path.relative_to(repo).as_posix()


def kill_process(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def trusted_tls(directory: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A server context for 127.0.0.1 with a self-signed certificate (written in
    ``directory``) that the test's fetchers trust (SSL_CERT_FILE)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subj = ["-subj", f"/CN={HOST}", "-addext", f"subjectAltName=IP:{HOST}"]
    subprocess.run(
        [*request, *subj, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def serve_http(
    handler: type[http.server.BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None
) -> http.server.ThreadingHTTPServer:
    """``handler``'s server on 127.0.0.1 (HTTPS with ``tls``), serving in a thread until
    its ``shutdown()``."""
    server = http.server.ThreadingHTTPServer((HOST, 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def http_response(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    """An HTTP/1.1 answer: ``status``, a Content-Length, the ``extra`` header lines."""
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


@dataclass
class RawSocketServer:
    """Serves files of ``root`` on 127.0.0.1, a thread a connection; a subclass says how
    (``_serve``). It counts the connections it accepted and the requests of each path
    (``asked``), and ``most_open``: the most connections open at once, as the kernel
    sees them (a connection the client closed before it opened the next one has its
    EOF queued: FIN before SYN), not as the serving threads have noticed yet."""

    root: Path
    asked: Counter[str] = field(default_factory=Counter, kw_only=True)
    remote: str = field(default="", kw_only=True)  # its name in the local repository
    tls: ssl.SSLContext | None = field(default=None, kw_only=True)  # HTTPS, if a subclass does
    connections: int = field(default=0, kw_only=True)
    most_open: int = field(default=0, kw_only=True)
    stopping: threading.Event = field(default_factory=threading.Event, kw_only=True)
    lock: threading.Lock = field(default_factory=threading.Lock, kw_only=True)

    def start(self) -> Self:
        self._live: set[socket.socket] = set()
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{HOST}:{self.port}/"

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()

    def count(self, path: str) -> int:
        """Count a request of ``path``; how many there were."""
        with self.lock:
            self.asked[path] += 1
            return self.asked[path]

    def file(self, path: str) -> bytes | None:
        target = (self.root / path.split("?", 1)[0].lstrip("/")).resolve()
        if not target.is_relative_to(self.root.resolve()) or not target.is_file():
            return None
        return target.read_bytes()

    def plain(self, path: str) -> bytes:
        body = self.file(path)
        return http_response(b"404\n", "404 Not Found") if body is None else http_response(body)

    def _serve(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                still = sum(1 for other in self._live if _still_open(other))
                self.most_open = max(self.most_open, still + 1)
                self._live.add(sock)
            threading.Thread(target=self._serve_then_forget, args=(sock,), daemon=True).start()

    def _serve_then_forget(self, sock: socket.socket) -> None:
        try:
            self._serve(sock)
        finally:
            with self.lock:
                self._live.discard(sock)


def _still_open(sock: socket.socket) -> bool:
    """Whether the client has not closed ``sock`` (no EOF queued, nothing read it)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
