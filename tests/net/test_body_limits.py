"""review16 R16-1: a per-object body's limit must hold when the answer says both Content-Length
and Transfer-Encoding: chunked (urllib3 then ignores Content-Length and reads the chunks
to their end). Standalone: a raw server on 127.0.0.1, no nginx."""

from __future__ import annotations

import socket
import threading

import pytest

from store.errors import NetworkError
from store.pull.per_object import PerObjectFetcher
from store.pull.settings import FetchSettings

_SENT = 4 << 20  # chunked bytes the server sends after saying Content-Length: 10


def _serve(srv: socket.socket) -> None:
    while True:
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                got = conn.recv(4096)
                if not got:
                    break
                data += got
            piece = b"x" * 65536
            try:
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                for _ in range(_SENT // len(piece)):
                    conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                conn.sendall(b"0\r\n\r\n")
            except OSError:
                pass


def test_a_chunked_body_that_says_a_small_length_stops_at_the_limit() -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_serve, args=(srv,), daemon=True).start()
    fetcher = PerObjectFetcher(
        f"http://127.0.0.1:{srv.getsockname()[1]}/repo/", FetchSettings(retries=0)
    )
    try:
        with pytest.raises(NetworkError):
            body = fetcher.get("objects/ab/cd.filez", 1000)
            pytest.fail(f"{len(body)} bytes given for a limit of 1000")
    finally:
        fetcher.close()
        srv.close()
