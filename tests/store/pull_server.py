"""A small threaded HTTP server on 127.0.0.1 for pull's own tests: it serves a
directory (an archive repository) with keep-alive, logs each request, and can be told
to answer some paths with an error for a number of tries."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any


class _Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.log.append(self.path)
            failing = self.server.failures.get(self.path, (0, 0))
            if failing[0] > 0:
                self.server.failures[self.path] = (failing[0] - 1, failing[1])
        if failing[0] > 0:
            self.send_response(failing[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
        self.lock = threading.Lock()
        self.log: list[str] = []
        self.failures: dict[str, tuple[int, int]] = {}
        self.connections = 0

    def get_request(self) -> Any:
        self.connections += 1
        return super().get_request()


class Served:
    """The running server: its ``url``, ``log`` of request paths, ``fail(path, status,
    times)``."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}/"

    @property
    def log(self) -> list[str]:
        with self._server.lock:
            return list(self._server.log)

    @property
    def connections(self) -> int:
        return self._server.connections

    def clear(self) -> None:
        with self._server.lock:
            self._server.log.clear()

    def fail(self, path: str, status: int, times: int = 1_000_000) -> None:
        with self._server.lock:
            self._server.failures[path] = (times, status)


@contextmanager
def serve(root: Path) -> Iterator[Served]:
    server = _Server(root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Served(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
