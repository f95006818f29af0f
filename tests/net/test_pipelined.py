"""The pull's pipelined lane (store/pull/pipelined.py) against servers that pipeline
badly: each pull either succeeds with the right objects (fsck clean) or fails as a
pull must (one line, non-zero exit, no ref moved, in time).

The server here is a raw socket server: it reads requests as they come, several at a
time when the client pipelines, and answers each through a function of the test that
may misbehave, for one connection's bytes at a time.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from store.errors import NetworkError
from store.pull.http import Fetcher
from store.pull.settings import FetchSettings
from tests.helpers import write_tree
from tests.net.repos import add_remote, archive_of, fsck_clean, local_repo, pull, refs, sapwood_ok
from tests.net.servers import RawSocketServer, http_response, serve_http, trusted_tls
from tests.net.test_bad_input import REFUSED_WITHIN, source_tree

# what an answer does after its bytes: go on (""), close the connection, stall (until
# the server stops), forget the requests already read (a server that does not
# pipeline), send its bytes a few a second ("trickle"), or send its last bytes in a
# write of their own ("split")
Then = str
Answer = tuple[bytes, Then]


response = http_response


@dataclass
class RawServer(RawSocketServer):
    """Serves ``root`` on 127.0.0.1; ``answer(server, path, seen, nth)`` says what to send
    for the ``seen``-th request of ``path`` (from 1), the ``nth`` on its connection."""

    answer: Callable[[RawServer, str, int, int], Answer]
    most_queued: int = field(default=0, kw_only=True)  # requests read ahead of answers

    def _serve(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError), sock:
            buffer, nth = b"", 0
            while not self.stopping.is_set():
                while b"\r\n\r\n" not in buffer:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buffer += data
                with self.lock:
                    self.most_queued = max(self.most_queued, buffer.count(b"\r\n\r\n"))
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                path = head.split(b" ")[1].decode()
                seen = self.count(path)
                data, then = self.answer(self, path, seen, nth)
                nth += 1
                if then == "trickle":  # a byte at a time, a few a second
                    for byte in data:
                        if self.stopping.wait(0.3):
                            return
                        sock.sendall(bytes([byte]))
                    continue
                if then == "split":  # the tail in a write of its own: Nagle holds it back
                    sock.sendall(data[:-16])  # until the client acknowledges the rest
                    data = data[-16:]
                sock.sendall(data)
                if then == "close":
                    return
                if then == "stall":
                    self.stopping.wait(60)
                    return
                if then == "forget":
                    buffer = b""


@dataclass
class Setup:
    archive: Path
    commit: str
    local: Path
    serve: Callable[[Callable[[RawServer, str, int, int], Answer]], RawServer]

    def objects(self, suffix: str = "filez") -> list[str]:
        """URL paths of the archive's objects of ``suffix``, smallest first."""
        files = sorted((self.archive / "objects").glob(f"*/*.{suffix}"), key=_size_then_name)
        return ["/" + p.relative_to(self.archive).as_posix() for p in files]


def _size_then_name(path: Path) -> tuple[int, str]:
    return path.stat().st_size, path.name


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    archive = tmp_path / "archive"
    commit = archive_of(archive, source_tree(tmp_path / "src"))
    yield from serving(archive, commit, tmp_path)


def serving(archive: Path, commit: str, tmp_path: Path) -> Iterator[Setup]:
    """A fixture's body: a local repository (with a branch of its own) and a Setup whose
    ``serve`` starts RawServers over ``archive``, each added as a remote; all stopped
    at the end."""
    local = local_repo(tmp_path / "local")
    sapwood_ok(local, "commit", "-b", "mine", write_tree(tmp_path / "mine", {"a": "a\n"}))
    servers: list[RawServer] = []

    def serve(answer: Callable[[RawServer, str, int, int], Answer]) -> RawServer:
        server = RawServer(archive, answer, remote=f"r{len(servers) + 1}").start()
        servers.append(server)
        add_remote(local, server.url, server.remote)
        return server

    yield Setup(archive, commit, local, serve)
    for server in servers:
        server.stop()


def pulled(setup: Setup, server: RawServer, env: dict[str, str] | None = None) -> float:
    """Pull from ``server``; it must succeed with every object right. Its time."""
    remote = server.remote
    started = time.monotonic()
    result = pull(setup.local, remote, "main", env=env)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert refs(setup.local)[f"{remote}:main"] == setup.commit
    fsck_clean(setup.local)
    return took


def refused(setup: Setup, server: RawServer, env: dict[str, str] | None = None) -> str:
    """Pull from ``server``; it must fail as a pull must. Its line."""
    remote = server.remote
    before = refs(setup.local)
    started = time.monotonic()
    result = pull(setup.local, remote, "main", env=env)
    took = time.monotonic() - started
    lines = result.stderr.splitlines()
    assert result.returncode != 0, result.stderr
    assert len(lines) == 1 and lines[0].startswith("sapwood: "), result.stderr
    assert took < REFUSED_WITHIN, f"refused after {took:.1f} s"
    assert refs(setup.local) == before
    fsck_clean(setup.local)
    return lines[0]


def plain(server: RawServer, path: str, seen: int, nth: int) -> Answer:
    return server.plain(path), ""


def on(
    target: str, bad: Callable[[RawServer, str], Answer], times: int | None = None
) -> Callable[[RawServer, str, int, int], Answer]:
    """Answers plainly, but ``bad`` for ``target`` (its first ``times`` requests, or all)."""

    def answer(server: RawServer, path: str, seen: int, nth: int) -> Answer:
        if path == target and (times is None or seen <= times):
            return bad(server, path)
        return server.plain(path), ""

    return answer


# ----- a server that pipelines well ---------------------------------------------------------
def test_requests_are_pipelined_on_few_connections(setup: Setup) -> None:
    server = setup.serve(plain)
    pulled(setup, server)
    assert server.most_queued > 4, server.most_queued
    objects = len(setup.objects()) + len(setup.objects("dirtree"))
    assert server.connections < objects // 2, (server.connections, objects)
    assert all(count == 1 for count in server.asked.values()), server.asked


# ----- closes, stops pipelining ---------------------------------------------------------------
@pytest.mark.parametrize("after", [1, 3])
def test_a_server_that_closes_after_k_answers(setup: Setup, after: int) -> None:
    def answer(server: RawServer, path: str, seen: int, nth: int) -> Answer:
        return server.plain(path), "close" if nth == after - 1 else ""

    pulled(setup, setup.serve(answer))


def test_connection_close_every_few_answers_is_honoured(setup: Setup) -> None:
    def answer(server: RawServer, path: str, seen: int, nth: int) -> Answer:
        body = server.file(path)
        if body is None:
            return server.plain(path), ""
        if nth == 4:
            return response(body, extra="Connection: close\r\n"), "close"
        return response(body), ""

    pulled(setup, setup.serve(answer))


def test_a_server_that_answers_one_request_then_stops_pipelining(setup: Setup) -> None:
    """It reads one request, answers, and forgets what else it read (as a server that
    does not pipeline): the lane waits for the timeout once, then is off."""

    def answer(server: RawServer, path: str, seen: int, nth: int) -> Answer:
        return server.plain(path), "forget"

    server = setup.serve(answer)
    took = pulled(setup, server, env={"SAPWOOD_HTTP_TIMEOUT": "1"})
    assert took < 15, took


# ----- a status, a redirect in the middle ----------------------------------------------------
def test_a_500_in_the_middle_is_retried(setup: Setup) -> None:
    target = setup.objects()[5]
    server = setup.serve(on(target, lambda s, p: (response(b"", "500 Oops"), ""), times=2))
    pulled(setup, server)
    assert server.asked[target] == 3


def test_a_404_in_the_middle_is_asked_once_and_named(setup: Setup) -> None:
    target = setup.objects()[5]
    server = setup.serve(on(target, lambda s, p: (response(b"", "404 Not Found"), "")))
    line = refused(setup, server)
    object_hex = target.split("/")[-2] + target.split("/")[-1].removesuffix(".filez")
    assert "missing" in line and object_hex in line, line
    assert server.asked[target] == 1


def test_a_redirect_in_the_middle_is_followed(setup: Setup) -> None:
    target = setup.objects()[5]

    def moved(server: RawServer, path: str) -> Answer:
        return response(b"", "302 Found", f"Location: {path}?moved\r\n"), ""

    server = setup.serve(on(target, moved, times=2))  # the lane's ask, the per-object one
    pulled(setup, server)
    assert server.asked[target + "?moved"] == 1


# ----- bodies the lane cannot read, or that lie ----------------------------------------------
def _chunked(server: RawServer, path: str, seen: int, nth: int) -> Answer:
    body = server.file(path)
    if body is None:
        return server.plain(path), ""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n", ""


def test_chunked_answers_are_read_by_the_per_object_path(setup: Setup) -> None:
    pulled(setup, setup.serve(_chunked))


@pytest.mark.parametrize("lie", [-7, 7])
def test_a_content_length_that_lies_once(setup: Setup, lie: int) -> None:
    target = setup.objects()[5]

    def lying(server: RawServer, path: str) -> Answer:
        body = server.file(path) or b""
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body) + lie}\r\n\r\n"
        return head.encode() + body, ""

    server = setup.serve(on(target, lying, times=1))
    pulled(setup, server, env={"SAPWOOD_HTTP_TIMEOUT": "1"})


def test_a_content_length_that_always_lies_is_refused(setup: Setup) -> None:
    target = setup.objects()[5]

    def shorter(server: RawServer, path: str) -> Answer:
        body = server.file(path) or b""
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body) - 7}\r\n\r\n"
        return head.encode() + body, ""

    refused(setup, setup.serve(on(target, shorter)), env={"SAPWOOD_HTTP_TIMEOUT": "1"})


def _wrong(setup: Setup, times: int | None) -> tuple[str, RawServer]:
    files = setup.objects()
    target, other = files[5], files[6]

    def wrong(server: RawServer, path: str) -> Answer:
        return response(server.file(other) or b""), ""

    return target, setup.serve(on(target, wrong, times=times))


def test_a_wrong_object_once_in_the_middle_is_asked_again(setup: Setup) -> None:
    target, server = _wrong(setup, 1)
    pulled(setup, server)
    assert server.asked[target] == 2


def test_a_wrong_object_always_is_refused(setup: Setup) -> None:
    target, server = _wrong(setup, None)
    refused(setup, server)
    assert server.asked[target] <= 3, server.asked[target]


def test_bytes_after_the_last_answer_are_never_an_answer(setup: Setup) -> None:
    injected = response(b"WRONG")

    def answer(server: RawServer, path: str, seen: int, nth: int) -> Answer:
        return server.plain(path) + injected, ""

    pulled(setup, setup.serve(answer))


# ----- stalls, a huge head ------------------------------------------------------------------
def test_a_stall_in_the_middle_of_a_window_is_given_up_in_time(setup: Setup) -> None:
    target = setup.objects()[5]

    def half(server: RawServer, path: str) -> Answer:
        body = server.file(path) or b""
        return response(body)[: 40 + len(body) // 2], "stall"

    server = setup.serve(on(target, half, times=1))
    took = pulled(setup, server, env={"SAPWOOD_HTTP_TIMEOUT": "1"})
    assert took < 15, took


def test_a_head_sent_a_byte_at_a_time_is_given_up_in_time(setup: Setup) -> None:
    target = setup.objects()[5]

    def trickle(server: RawServer, path: str) -> Answer:
        return server.plain(path), "trickle"

    server = setup.serve(on(target, trickle, times=1))
    took = pulled(setup, server, env={"SAPWOOD_HTTP_TIMEOUT": "1"})
    assert took < 15, took


@pytest.mark.parametrize("times", [1, None])
def test_a_huge_head(setup: Setup, times: int | None) -> None:
    target = setup.objects()[5]
    padding = "".join(f"X-Pad-{n}: {'y' * 600}\r\n" for n in range(120))  # > 64 KiB

    def huge(server: RawServer, path: str) -> Answer:
        return response(server.file(path) or b"", extra=padding), ""

    server = setup.serve(on(target, huge, times=times))
    if times is None:
        refused(setup, server)
    else:
        pulled(setup, server)


# ----- TLS ------------------------------------------------------------------------------------
class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def tls_echo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """An HTTPS server on 127.0.0.1 (a certificate this test trusts) answering each GET
    with its path; its port."""
    server = serve_http(_Echo, trusted_tls(tmp_path, monkeypatch))
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_the_lane_over_tls_checks_the_host_name(tls_echo: int) -> None:
    """Pipelined over TLS with the certificate checked: every answer in order, on the
    lane alone; a name the certificate does not hold is refused (by the per-object
    path, in its words)."""
    names = [f"o{number}" for number in range(100)]
    with Fetcher(f"https://127.0.0.1:{tls_echo}/repo/", FetchSettings(retries=0)) as fetcher:
        got = list(fetcher.fetch_many(names, 1000, lambda index, body: body.read()))
        assert got == [(name, f"/repo/{name}".encode()) for name in names]
        assert fetcher.requests == 100
    wrong = f"https://localhost:{tls_echo}/repo/"
    refused = pytest.raises(NetworkError, match=r"TLS error: .*CERTIFICATE_VERIFY_FAILED")
    with Fetcher(wrong, FetchSettings(retries=0)) as fetcher, refused:
        list(fetcher.fetch_many(["o1"], 1000, lambda index, body: body.read()))


def test_answers_whose_tails_nagle_holds_back_do_not_wait_for_delayed_acks(
    tmp_path: Path,
) -> None:
    """A server without TCP_NODELAY (nginx answering pipelined requests with sendfile)
    sends a response's last bytes only once the client has acknowledged what came
    before; a client that delays its acknowledgement (Linux: up to 40 ms once the
    connection looks interactive, as a pipeline refilling its window does) waited that
    long for an answer whose tail was the last thing in flight (a window's end: one
    or two of an update pull's ~100 objects, 40 ms each in a pull of 0.2 s). The lane
    acknowledges at once (TCP_QUICKACK before each read): 40 answers asked one by one
    took 16-23 ms with it, 1.72 s without."""
    root = tmp_path / "root"
    root.mkdir()
    names = [f"o{number}" for number in range(40)]
    for name in names:
        (root / name).write_bytes(name.encode() * 1000)
    server = RawServer(root, lambda server, path, seen, nth: (server.plain(path), "split"))
    server.start()
    try:
        with Fetcher(server.url, FetchSettings(retries=0)) as fetcher:
            started = time.monotonic()
            got = [  # one at a time: each answer's tail is the last thing in flight
                answer
                for name in names
                for answer in fetcher.fetch_many([name], 1 << 20, lambda i, body: body.read())
            ]
            took = time.monotonic() - started
    finally:
        server.stop()
    assert got == [(name, name.encode() * 1000) for name in names]
    # 40 delayed acknowledgements are 1.6 s at least; the answers alone, milliseconds
    assert took < 0.8, f"{took:.2f} s for 40 answers"
