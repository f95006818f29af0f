"""Attacks on the pull's own kept-alive connection (attack 10, /work/plan/attack10.md):
servers that close connections silently, answer with another request's body, send
more than Content-Length, stall on a reused connection, or never answer. Each pull
fails as a pull must (one line, non-zero exit, no ref moved, nothing corrupt stored,
in time) or succeeds whole; the next pull from a good server succeeds."""

from __future__ import annotations

import http.server
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from store.errors import CorruptObjectError, NetworkError
from store.pull.http import Fetcher
from store.pull.settings import FetchSettings
from tests.helpers import cli, write_tree
from tests.net import servers
from tests.net.repos import (
    add_remote,
    archive_of,
    fsck_clean,
    local_repo,
    pull,
    refs,
    sapwood_ok,
)
from tests.net.servers import Behaviour, TamperingServer, _TamperingHandler
from tests.net.test_bad_input import (
    LONG_ONLY,
    REFUSED_WITHIN,
    Served,
    refused_then_recovered,
    source_tree,
)

OBJECTS = r"^/objects/"


def _silent_close(handler: _TamperingHandler, path: str, body: bytes | None) -> None:
    """The answer, with no Connection: close, then the connection closed."""
    handler._plain(path, body)
    handler._hang_up()


def _drop_unanswered(handler: _TamperingHandler, path: str, body: bytes | None) -> None:
    """The request read, the connection closed without a byte of answer."""
    handler._hang_up()


def _previous_body(handler: _TamperingHandler, path: str, body: bytes | None) -> None:
    """The body of this connection's previous request (a desynchronised server)."""
    previous = getattr(handler, "previous", None)
    handler.previous = body  # type: ignore[attr-defined]
    handler._send(200, previous if previous is not None else (body or b""))


def _extra_response(handler: _TamperingHandler, path: str, body: bytes | None) -> None:
    """The right answer, then, a moment later (past the client's buffered read), a
    whole second response of this body flipped: bytes past Content-Length on a
    kept-alive connection, which the next request on it must not take for its answer."""
    if body is None:
        handler._plain(path, body)
        return
    handler._send(200, body)
    other = bytes(b ^ 0x55 for b in body)
    time.sleep(0.05)
    handler.wfile.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(other)}\r\n\r\n".encode() + other)
    handler.wfile.flush()


def _never_answer(handler: _TamperingHandler, path: str, body: bytes | None) -> None:
    handler.owner.stopping.wait(120)
    handler._hang_up()


def _half_head(handler: _TamperingHandler, path: str, body: bytes | None) -> None:
    """Part of a head, then a byte a second: a per-recv() timeout never trips."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
    handler.wfile.flush()
    for _ in range(120):
        if handler.owner.stopping.wait(0.5):
            break
        try:
            handler.wfile.write(b"X")
            handler.wfile.flush()
        except OSError:
            break
    handler._hang_up()


EXTRA: dict[str, Callable[[_TamperingHandler, str, bytes | None], None]] = {
    "silent-close": _silent_close,
    "drop-unanswered": _drop_unanswered,
    "previous-body": _previous_body,
    "extra-response": _extra_response,
    "never-answer": _never_answer,
    "half-head": _half_head,
}


@pytest.fixture(autouse=True)
def _behaviours(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, action in EXTRA.items():
        monkeypatch.setitem(servers._BEHAVIOURS, name, action)


@pytest.fixture
def served(tmp_path: Path, tamper: Callable[[Path], TamperingServer]) -> Served:
    """As tests/net/test_bad_input.py's: the archive, its server, a local repository."""
    archive = tmp_path / "archive"
    commit = archive_of(archive, source_tree(tmp_path / "src"))
    local = local_repo(tmp_path / "local")
    server = tamper(archive)
    add_remote(local, server.url)
    sapwood_ok(local, "commit", "-b", "mine", write_tree(tmp_path / "mine", {"a": "a\n"}))
    return Served(archive, commit, server, local)


def misbehave(server: TamperingServer, pattern: str, name: str, times: int | None = None) -> None:
    server.misbehave(pattern, cast(Behaviour, name), times)


def pulled_whole(served: Served) -> None:
    assert refs(served.local)["origin:main"] == served.commit
    fsck_clean(served.local)


def test_a_server_that_closes_after_every_answer_is_pulled_from(served: Served) -> None:
    misbehave(served.server, OBJECTS, "silent-close")
    result = pull(served.local, "origin", "main")
    assert result.returncode == 0, result.stderr
    pulled_whole(served)


def test_a_server_that_never_answers_a_reused_connection_is_given_up(served: Served) -> None:
    """Every request for an object is dropped unanswered, on a reused connection or a
    new one: the free retry on a new connection must not loop (at most two requests
    an attempt); refused as a pull must be, in time."""
    misbehave(served.server, OBJECTS, "drop-unanswered")
    started = time.monotonic()
    refused_then_recovered(served)
    assert time.monotonic() - started < REFUSED_WITHIN
    asked = len(served.server.requested(OBJECTS))
    assert asked < 200, asked


def test_answers_with_the_previous_body_are_refused(served: Served) -> None:
    misbehave(served.server, OBJECTS, "previous-body")
    refused_then_recovered(served)


def test_bytes_past_content_length_never_become_the_next_answer(served: Served) -> None:
    """Each object's answer is followed by a whole response of other bytes: the next
    request goes on a new connection, and the pull succeeds (it failed: the injected
    response was taken for the next object, refused by blake3; attack10 finding 4)."""
    misbehave(served.server, OBJECTS, "extra-response")
    env = {"SAPWOOD_HTTP_CONNECTIONS": "1", "SAPWOOD_HTTP_RETRIES": "0"}
    result = pull(served.local, "origin", "main", env=env)
    assert result.returncode == 0, result.stderr
    pulled_whole(served)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("never-answer", marks=LONG_ONLY),
        "half-head",
        pytest.param("stall", marks=LONG_ONLY),
    ],
)
def test_a_stall_on_a_reused_connection_is_given_up_in_time(served: Served, name: str) -> None:
    target = served.biggest()
    misbehave(served.server, target, name)
    started = time.monotonic()
    refused_then_recovered(served, env={"SAPWOOD_HTTP_TIMEOUT": "1"})
    assert time.monotonic() - started < (1 + 3) * 2 + 10


class _Hop(http.server.BaseHTTPRequestHandler):
    back: str = ""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.back + self.path.removeprefix("/hop") + "?back")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def hop(served: Served) -> Iterator[str]:
    handler = type("Hop", (_Hop,), {"back": served.server.url.rstrip("/")})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _redirect_to_hop(hop: str) -> Callable[[_TamperingHandler, str, bytes | None], None]:
    def action(handler: _TamperingHandler, path: str, body: bytes | None) -> None:
        handler.send_response(302)
        handler.send_header("Location", hop + "/hop" + path)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return action


def test_a_redirect_elsewhere_and_back_is_followed(
    served: Served, hop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(servers._BEHAVIOURS, "hop", _redirect_to_hop(hop))
    misbehave(served.server, OBJECTS, "hop", times=1)
    result = pull(served.local, "origin", "main")
    assert result.returncode == 0, result.stderr
    pulled_whole(served)


def test_a_listener_that_accepts_and_never_answers(served: Served) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        port = listener.getsockname()[1]
        before = refs(served.local)
        result = cli("--repo", served.local, "remote", "add", "mute", f"http://127.0.0.1:{port}/")
        assert result.code == 0, result.err
        started = time.monotonic()
        done = pull(served.local, "mute", "main", env={"SAPWOOD_HTTP_TIMEOUT": "0.5"})
        assert time.monotonic() - started < 15
        assert done.returncode != 0 and len(done.stderr.splitlines()) == 1, done.stderr
        assert refs(served.local) == before
    finally:
        listener.close()


class _SpacedRedirect(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/repo/moved":
            self.send_response(302)
            self.send_header("Location", "/repo/new place")  # unencoded, as some servers do
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_redirect_back_home_with_a_space_is_followed_as_the_pool_would() -> None:
    """A Location under the base URL goes on the fetcher's own connection, where
    http.client refuses a space (InvalidURL: 'connection broken', retried in vain);
    the pool, which every redirect went through before, percent-encodes it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SpacedRedirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/repo/"
        with Fetcher(base, FetchSettings(retries=0)) as fetcher:
            assert fetcher.get("moved", 1000) == b"/repo/new%20place"
    finally:
        server.shutdown()
        server.server_close()


class _ResetAfterEachAnswer(http.server.BaseHTTPRequestHandler):
    """Answers, then closes the TLS connection abortively (a reset, no close_notify),
    never saying Connection: close: as a server or balancer dropping idle connections."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_tls_connection_reset_after_each_answer_is_replaced_for_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under TLS the reused connection's failure is ssl's SSLEOFError, not a
    ConnectionError: it was an attempt spent (with no retries, a failed fetch worded
    'TLS error: EOF occurred in violation of protocol'), where plain HTTP retries at once."""
    server = servers.serve_http(_ResetAfterEachAnswer, servers.trusted_tls(tmp_path, monkeypatch))
    try:
        base = f"https://127.0.0.1:{server.server_address[1]}/repo/"
        with Fetcher(base, FetchSettings(retries=0)) as fetcher:
            for number in range(6):
                assert fetcher.get(f"o{number}", 1000) == f"/repo/o{number}".encode()
                time.sleep(0.05)  # the reset has arrived; well under the idle check
    finally:
        server.shutdown()
        server.server_close()


# ----- a connection the server wrote to unasked, or whose answer is out of step ---------------
class _Unasked(http.server.BaseHTTPRequestHandler):
    """Answers every GET with its path, on a kept-alive connection, and a moment later
    (when the client has read the answer) writes ``after`` on it unasked. Only the
    first ``straight`` answers on a connection are right (None: all): later ones are
    a line that is no status line (a server out of step with the requests)."""

    protocol_version = "HTTP/1.1"
    after = b""
    straight: int | None = None

    def do_GET(self) -> None:
        self.answered: int = getattr(self, "answered", 0) + 1
        if self.straight is not None and self.answered > self.straight:
            self.wfile.write(b"0\r\n\r\n")  # the end of a chunked body, say
            self.wfile.flush()
            return
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if self.after:
            time.sleep(0.05)
            self.wfile.write(self.after)
            self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class _Server:
    url: str  # the repository's base URL
    handler: type[_Unasked]  # its class attributes say how it answers, from now on
    accepted: list[int]  # one item per connection accepted


@pytest.fixture
def unasked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., _Server]]:
    """``unasked(tls=False, **answers)``: a _Unasked server (``answers``: its ``after``
    and ``straight``), until the test ends."""
    started: list[http.server.ThreadingHTTPServer] = []

    def serve(tls: bool = False, **answers: object) -> _Server:
        handler = cast(type[_Unasked], type("Handler", (_Unasked,), answers))
        accepted: list[int] = []

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, object]:
                accepted.append(1)
                return super().get_request()

        server = Server(("127.0.0.1", 0), handler)
        if tls:
            context = servers.trusted_tls(tmp_path, monkeypatch)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        scheme = "https" if tls else "http"
        return _Server(f"{scheme}://127.0.0.1:{server.server_address[1]}/repo/", handler, accepted)

    yield serve
    for server in started:
        server.shutdown()
        server.server_close()


INJECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nWRONG"


@pytest.mark.long(keep=("http-a-response", "https-junk"))
@pytest.mark.parametrize("after", [INJECTED, b"junk\r\n"], ids=["a-response", "junk"])
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_bytes_a_server_sends_unasked_are_never_an_answer(
    unasked: Callable[..., _Server], after: bytes, tls: bool
) -> None:
    """Sent after each answer, within the time a connection was reused without a poll:
    the next request goes on a new connection, costing no attempt (it took the
    injected response for its own answer, or failed on the junk as a status line)."""
    server = unasked(tls=tls, after=after)
    with Fetcher(server.url, FetchSettings(retries=0)) as fetcher:
        for number in range(4):
            assert fetcher.get(f"o{number}", 1000) == f"/repo/o{number}".encode()
            time.sleep(0.15)  # the unasked bytes have come
    assert len(server.accepted) == 4


def test_an_answer_out_of_step_on_a_reused_connection_is_asked_anew(
    unasked: Callable[..., _Server],
) -> None:
    """A reused connection answers with something that is no response head (bytes that
    came after the poll): asked once more at once on a new connection, as for a reset."""
    server = unasked(straight=1)
    with Fetcher(server.url, FetchSettings(retries=0)) as fetcher:
        for number in range(4):
            assert fetcher.get(f"o{number}", 1000) == f"/repo/o{number}".encode()
        assert fetcher.requests == 7  # each answer out of step asked again: 1 + 3 x 2
    assert len(server.accepted) == 4


def test_a_server_never_in_step_is_refused_without_a_loop(
    unasked: Callable[..., _Server],
) -> None:
    """Out of step from the first answer on every connection, and no attempt to spare:
    the free retry is one new connection, and the fetch fails in clear words."""
    server = unasked()
    with Fetcher(server.url, FetchSettings(retries=0)) as fetcher:
        assert fetcher.get("o0", 1000) == b"/repo/o0"
        server.handler.straight = 0
        with pytest.raises(NetworkError, match=r"o1: connection broken \(BadStatusLine\)"):
            fetcher.get("o1", 1000)
    assert len(server.accepted) == 2


def _expecting(path: str) -> Callable[[BinaryIO], bytes]:
    """A consume that refuses any body but ``path`` (as an object's id check does)."""

    def consume(body: BinaryIO) -> bytes:
        data = body.read()
        if data != path.encode():
            raise CorruptObjectError(f"{path}: got {data[:20]!r}")
        return data

    return consume


def test_an_answer_refused_on_a_reused_connection_is_asked_anew(
    unasked: Callable[..., _Server],
) -> None:
    """The unasked response comes while the next request goes (no poll can see it
    first): the body refused, the file is asked once more on a new connection."""
    server = unasked(after=INJECTED)
    with Fetcher(server.url, FetchSettings(retries=0)) as fetcher:
        for number in range(4):
            path = f"/repo/o{number}"
            assert fetcher.fetch(f"o{number}", 1000, _expecting(path)) == path.encode()
    assert len(server.accepted) >= 2  # one for each object refused at first


def test_a_wrong_answer_on_a_new_connection_is_refused_at_once(
    unasked: Callable[..., _Server],
) -> None:
    """Refused on a reused connection, asked once more anew, refused again: raised,
    with no third request (one connection more for each such file, no more)."""
    server = unasked()
    with Fetcher(server.url, FetchSettings(retries=0)) as fetcher:
        assert fetcher.get("o0", 1000) == b"/repo/o0"
        for name in ("o1", "o2"):
            with pytest.raises(CorruptObjectError, match=f"/repo/other: got b'/repo/{name}'"):
                fetcher.fetch(name, 1000, _expecting("/repo/other"))
    assert len(server.accepted) == 3
