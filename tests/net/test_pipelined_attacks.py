"""Attack 14: a hostile web server against the pull's pipelined lane
(store/pull/pipelined.py), findings in /work/plan/attack14.md.

Each pull must either succeed with the right objects (the served commit, fsck clean,
a checkout equal to the source) or fail as a pull must (one ``sapwood:`` line, a
non-zero exit, no ref moved, fsck clean, no traceback, in time) and then a pull from
the same server behaving must succeed. Cases already in tests/net/test_pipelined.py
(P1's) are not repeated here.

The server is a raw socket server run by a per-connection *script*: a function that
reads the requests as the client sends them (pipelined: several may be waiting) and
writes whatever bytes it likes, so that answers can be out of step with requests.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import sapwood_argv, write_tree
from tests.net.repos import add_remote, archive_of, fsck_clean, local_repo, pull, refs, sapwood_ok
from tests.net.servers import RawSocketServer, http_response, trusted_tls
from tests.net.test_bad_input import LONG_ONLY

TIMEOUT = "2"  # SAPWOOD_HTTP_TIMEOUT of every pull here (conftest's too)
WITHIN = 30.0  # seconds: any pull here, good or refused
BIG = 3 << 20  # a file streamed by the lane (more than its 1 MiB SMALL)


# ----- the server -----------------------------------------------------------------------------
class Conn:
    """One accepted connection, as a script sees it."""

    def __init__(self, server: Hostile, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.buffer = b""
        self.nth = 0  # requests read so far on this connection
        self.previous: str | None = None  # the path of the request before the last
        self.last: str | None = None

    def request(self, wait: float | None = None) -> str | None:
        """The path of the next request; None at EOF, or when none is whole within
        ``wait`` seconds (if given)."""
        self.sock.settimeout(wait)
        try:
            while b"\r\n\r\n" not in self.buffer:
                data = self.sock.recv(65536)
                if not data:
                    return None
                self.buffer += data
        except TimeoutError:
            return None
        finally:
            self.sock.settimeout(None)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        path = head.split(b" ")[1].decode().split("?", 1)[0]
        self.nth += 1
        self.previous, self.last = self.last, path
        self.server.count(path)
        return path

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def stall(self) -> None:
        self.server.stopping.wait(60)


Script = Callable[["Hostile", Conn], None]


@dataclass
class Hostile(RawSocketServer):
    """Serves ``root`` on 127.0.0.1 (HTTPS with ``tls``): ``script(server, conn)`` runs
    each connection."""

    script: Script
    fired: threading.Event = field(default_factory=threading.Event, kw_only=True)  # done

    def _serve(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError), sock:
            if self.tls is not None:
                sock.settimeout(5)
                sock = self.tls.wrap_socket(sock, server_side=True)
                sock.settimeout(None)
            self.script(self, Conn(self, sock))


response = http_response


def plain(server: Hostile, conn: Conn) -> None:
    while (path := conn.request()) is not None:
        conn.send(server.plain(path))


def is_object(path: str) -> bool:
    return path.startswith("/objects/") and path.endswith(".filez")


# ----- the repositories -----------------------------------------------------------------------
@dataclass
class Setup:
    archive: Path
    source: Path
    commit: str
    local: Path
    tmp: Path
    serve: Callable[..., Hostile]

    def objects(self, suffix: str = "filez") -> list[str]:
        files = sorted((self.archive / "objects").glob(f"*/*.{suffix}"))
        return ["/" + p.relative_to(self.archive).as_posix() for p in files]

    def path_of(self, name: str) -> str:
        """The URL path of the content object of source file ``name``."""
        listing = sapwood_ok(self.archive, "ls", "-R", "--json", "main")
        for item in json.loads(listing):
            if item["path"] == "/" + name:
                checksum = item["id"]
                return f"/objects/{checksum[:2]}/{checksum[2:]}.filez"
        raise AssertionError(name)


def tree_files(count: int) -> dict[str, str | bytes]:
    """One directory of ``count`` small files with a big one in the middle of their
    order (one window of the lane holds them all), and a second directory."""
    files: dict[str, str | bytes] = {f"d/f{n:03}": f"file {n}\n" * (n + 1) for n in range(count)}
    files[f"d/f{count // 2:03}big"] = os.urandom(BIG)
    files |= {f"e/g{n}": f"other {n}\n" for n in range(5)}
    return files


def make_setup(tmp_path: Path, count: int = 40) -> Iterator[Setup]:
    source = write_tree(tmp_path / "src", tree_files(count))
    archive = tmp_path / "archive"
    commit = archive_of(archive, source)
    local = local_repo(tmp_path / "local")
    sapwood_ok(local, "commit", "-b", "mine", write_tree(tmp_path / "mine", {"a": "a\n"}))
    servers: list[Hostile] = []

    def serve(script: Script, tls: ssl.SSLContext | None = None) -> Hostile:
        server = Hostile(archive, script, remote=f"r{len(servers) + 1}", tls=tls).start()
        servers.append(server)
        add_remote(local, server.url, server.remote)
        return server

    yield Setup(archive, source, commit, local, tmp_path, serve)
    for server in servers:
        server.stop()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    yield from make_setup(tmp_path)


@pytest.fixture
def wide(tmp_path: Path) -> Iterator[Setup]:
    """Three groups of 64 content objects in one directory: pieces of work that last."""
    yield from make_setup(tmp_path, count=190)


ENV = {"SAPWOOD_HTTP_TIMEOUT": TIMEOUT}


def matches_source(setup: Setup, ref: str) -> None:
    out = setup.tmp / f"co-{ref.replace(':', '-')}"
    sapwood_ok(setup.local, "checkout", ref, out)
    for path in setup.source.rglob("*"):
        if path.is_file():
            assert (out / path.relative_to(setup.source)).read_bytes() == path.read_bytes()


def pulled(setup: Setup, server: Hostile, env: dict[str, str] | None = None) -> float:
    """Pull from ``server``: it must succeed, whole and right. Its time."""
    started = time.monotonic()
    result = pull(setup.local, server.remote, "main", env=ENV | (env or {}), timeout=WITHIN)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert refs(setup.local)[f"{server.remote}:main"] == setup.commit
    fsck_clean(setup.local)
    matches_source(setup, f"{server.remote}:main")
    return took


def refused(setup: Setup, server: Hostile, env: dict[str, str] | None = None) -> str:
    """Pull from ``server``: it must fail as a pull must; then, the server behaving,
    a pull must succeed. The line."""
    before = refs(setup.local)
    started = time.monotonic()
    result = pull(setup.local, server.remote, "main", env=ENV | (env or {}), timeout=WITHIN)
    took = time.monotonic() - started
    lines = result.stderr.splitlines()
    assert result.returncode != 0, result.stderr
    assert len(lines) == 1 and lines[0].startswith("sapwood: "), result.stderr
    assert took < WITHIN, took
    assert refs(setup.local) == before
    fsck_clean(setup.local)
    server.script = plain
    pulled(setup, server)
    return lines[0]


def either(setup: Setup, server: Hostile, env: dict[str, str] | None = None) -> str:
    """Pull from ``server``: it succeeds whole, or fails as a pull must (then a pull
    from it behaving succeeds). "pulled" or the line."""
    before = refs(setup.local)
    result = pull(setup.local, server.remote, "main", env=ENV | (env or {}), timeout=WITHIN)
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode == 0:
        assert refs(setup.local)[f"{server.remote}:main"] == setup.commit
        fsck_clean(setup.local)
        matches_source(setup, f"{server.remote}:main")
        return "pulled"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sapwood: "), result.stderr
    assert refs(setup.local) == before
    fsck_clean(setup.local)
    server.script = plain
    pulled(setup, server)
    return lines[0]


def no_loop(server: Hostile, most: int = 6) -> None:
    """No file asked more than ``most`` times: the lane re-sends no window for ever."""
    worst = max(server.asked.values())
    assert worst <= most, server.asked.most_common(3)


# ----- answers out of step --------------------------------------------------------------------
def _pipelined_once(
    bad: Callable[[Hostile, Conn, str], None],
) -> Script:
    """Plain, except on the first connection that pipelines objects (a request waiting
    behind the one read, an object asked before it on that connection):
    ``bad(server, conn, path)`` answers that request; the rest of that connection is
    plain."""
    lock = threading.Lock()

    def script(server: Hostile, conn: Conn) -> None:
        while (path := conn.request()) is not None:
            behind_an_object = is_object(conn.previous or "")  # (not a .commitmeta's 404)
            if behind_an_object and is_object(path) and b"\r\n\r\n" in conn.buffer:
                with lock:
                    first = not server.fired.is_set()
                    server.fired.set()
                if first:
                    bad(server, conn, path)
                    return
            conn.send(server.plain(path))

    return script


def _ahead(server: Hostile, conn: Conn, path: str) -> None:
    """This request answered with the next one's file, and so on to the end: one step
    ahead (the last request gets nothing, then the connection closes)."""
    while (following := conn.request(wait=0.5)) is not None:
        conn.send(server.plain(following))


def _behind(server: Hostile, conn: Conn, path: str) -> None:
    """Each request from this one on answered with the file of the request before."""
    conn.send(server.plain(conn.previous or path))
    while conn.request(wait=0.5) is not None:
        conn.send(server.plain(conn.previous or ""))


def _repeat(server: Hostile, conn: Conn, path: str) -> None:
    conn.send(server.plain(path) * 2)
    plain(server, conn)


def _dropped(server: Hostile, conn: Conn, path: str) -> None:
    plain(server, conn)  # this request never answered


@pytest.mark.parametrize("bad", [_ahead, _behind, _repeat, _dropped], ids=lambda f: f.__name__)
def test_answers_out_of_step_once_are_caught_and_fetched_again(
    setup: Setup, bad: Callable[[Hostile, Conn, str], None]
) -> None:
    server = setup.serve(_pipelined_once(bad))
    pulled(setup, server)
    assert server.fired.is_set()
    assert max(server.asked.values()) >= 2  # what the lane refused was asked again
    no_loop(server)


@LONG_ONLY
def test_answers_always_one_step_ahead_on_every_connection(setup: Setup) -> None:
    """Every connection answers each request with the next one's file: the lane is
    caught at its first wrong object; the per-object path asks one at a time (on a
    connection that has no next request), so the pull succeeds or fails cleanly."""

    def script(server: Hostile, conn: Conn) -> None:
        path = conn.request()
        while path is not None:
            following = conn.request(wait=0.2)
            conn.send(server.plain(following if following is not None else path))
            path = following

    server = setup.serve(script)
    either(setup, server)
    no_loop(server)


def test_a_delayed_extra_answer_after_each_is_never_taken_for_an_object(setup: Setup) -> None:
    """After every answer, 50 ms later, a whole response of other bytes (past the
    client's poll of the idle connection): a content-addressed object refuses it and
    is asked again; nothing unverified may be stored."""

    def script(server: Hostile, conn: Conn) -> None:
        while (path := conn.request()) is not None:
            conn.send(server.plain(path))
            if conn.buffer:  # pipelined: answer the next one first
                continue
            time.sleep(0.05)
            conn.send(response(b"INJECTED" * 8))

    server = setup.serve(script)
    either(setup, server)
    no_loop(server)


# ----- 1xx ------------------------------------------------------------------------------------
def _interim(status: str) -> Script:
    """Every answer to a content object preceded by an interim (1xx) response."""

    def script(server: Hostile, conn: Conn) -> None:
        while (path := conn.request()) is not None:
            interim = f"HTTP/1.1 {status}\r\nLink: </x>; rel=preload\r\n\r\n".encode()
            conn.send((interim if is_object(path) else b"") + server.plain(path))

    return script


def test_a_100_continue_before_each_answer_is_read_past(setup: Setup) -> None:
    server = setup.serve(_interim("100 Continue"))
    pulled(setup, server)
    no_loop(server, 3)


def test_a_103_early_hints_before_each_answer_is_read_past(setup: Setup) -> None:
    """RFC 9110 §15.2: a client must accept any 1xx before the final response (nginx
    1.29 sends 103 with early_hints). The lane gives the object to the per-object path,
    whose http.client skips only 100: "HTTP 103", and the pull fails."""
    server = setup.serve(_interim("103 Early Hints"))
    pulled(setup, server)


def test_a_103_before_each_answer_with_the_lane_off(setup: Setup) -> None:
    """The same, but the summary comes as HTTP/1.0 (the lane is off for the pull at
    once): every object goes the per-object way, which must read past the 103 too."""

    def script(server: Hostile, conn: Conn) -> None:
        while (path := conn.request()) is not None:
            if path == "/summary":
                data = server.plain(path).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
                conn.send(data.replace(b"\r\n", b"\r\nConnection: close\r\n", 1))
                return
            interim = b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n"
            conn.send((interim if is_object(path) else b"") + server.plain(path))

    server = setup.serve(script)
    pulled(setup, server)


# ----- HTTP/1.0, closes, resets, stalls after k answers ---------------------------------------
def test_http_1_0_answers_with_keep_alive(setup: Setup) -> None:
    def script(server: Hostile, conn: Conn) -> None:
        while (path := conn.request()) is not None:
            data = server.plain(path).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
            conn.send(data.replace(b"\r\n", b"\r\nConnection: keep-alive\r\n", 1))

    server = setup.serve(script)
    pulled(setup, server)
    no_loop(server, 3)


@pytest.mark.long(keep=("0-reset", "5-half-head", "5-half-body-close"))
@pytest.mark.parametrize("how", ["reset", "half-head", "half-body-close"])
@pytest.mark.parametrize("after", [0, 5])
def test_a_connection_that_breaks_after_k_answers(setup: Setup, how: str, after: int) -> None:
    """Every connection answers ``after`` requests, then breaks in the middle of the
    next answer: the rest goes the per-object way, which the server serves (one
    request per connection being no pipeline, it is answered)."""

    def script(server: Hostile, conn: Conn) -> None:
        while (path := conn.request()) is not None:
            data = server.plain(path)
            if conn.nth <= after or not is_object(path) or not conn.buffer:
                conn.send(data)
                continue
            if how == "reset":
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                return
            if how == "half-head":
                conn.send(data[:20])
                return
            conn.send(data[: len(data) - 3])
            return

    server = setup.serve(script)
    took = pulled(setup, server)
    assert took < 20, took
    no_loop(server)


def test_a_stall_mid_head_on_every_pipelined_connection(setup: Setup) -> None:
    """Pipelined connections stall in the middle of their second head: the lane is off
    after one timeout, the rest one by one (served: one request waiting)."""

    def script(server: Hostile, conn: Conn) -> None:
        while (path := conn.request()) is not None:
            if conn.nth >= 2 and conn.buffer and is_object(path):
                conn.send(b"HTTP/1.1 200 OK\r\nContent-Le")
                conn.stall()
                return
            conn.send(server.plain(path))

    server = setup.serve(script)
    took = pulled(setup, server)
    assert took < 15, took


# ----- heads ----------------------------------------------------------------------------------
def _head_once(setup: Setup, make: Callable[[bytes], bytes]) -> Script:
    """Plain, but the first pipelined answer to each content object (one with another
    request waiting behind it: the lane's, never the per-object path's) is
    ``make(body)``."""
    seen: set[str] = set()
    lock = threading.Lock()

    def script(server: Hostile, conn: Conn) -> None:
        while (path := conn.request()) is not None:
            body = server.file(path)
            with lock:
                first = is_object(path) and path not in seen and b"\r\n\r\n" in conn.buffer
                if first:
                    seen.add(path)
                    server.fired.set()
            conn.send(make(body) if first and body is not None else server.plain(path))

    return script


def _head_always(target: str, make: Callable[[bytes], bytes]) -> Script:
    """Plain, but every answer for ``target`` is ``make(body)`` (the per-object path's
    too)."""

    def script(server: Hostile, conn: Conn) -> None:
        while (path := conn.request()) is not None:
            body = server.file(path)
            if path == target and body is not None:
                server.fired.set()
                conn.send(make(body))
                continue
            conn.send(server.plain(path))

    return script


def _h(*lines: str) -> Callable[[bytes], bytes]:
    def make(body: bytes) -> bytes:
        head = "".join(line.replace("LEN", str(len(body))) + "\r\n" for line in lines)
        return head.encode() + b"\r\n" + body

    return make


HEADS = {
    "two-lengths": _h("HTTP/1.1 200 OK", "Content-Length: LEN", "Content-Length: 1"),
    "two-lengths-one-line": _h("HTTP/1.1 200 OK", "Content-Length: LEN, 1"),
    "negative": _h("HTTP/1.1 200 OK", "Content-Length: -LEN"),
    "huge": _h("HTTP/1.1 200 OK", "Content-Length: 99999999999999999999999"),
    "plus": _h("HTTP/1.1 200 OK", "Content-Length: +LEN"),
    "inner-space": _h("HTTP/1.1 200 OK", "Content-Length: 1 LEN"),
    "chunked-and-length": _h("HTTP/1.1 200 OK", "Content-Length: 99", "Transfer-Encoding: chunked"),
    "no-colon": _h("HTTP/1.1 200 OK", "Content-Length: LEN", "X-Bad header"),
    "space-before-colon": _h("HTTP/1.1 200 OK", "Content-Length : 1", "Content-Length: LEN"),
    "obs-fold": _h("HTTP/1.1 200 OK", "Content-Length: 1", " LEN"),
    "megabyte-line": _h("HTTP/1.1 200 OK", "X-Pad: " + "y" * (1 << 20), "Content-Length: LEN"),
    "bare-lf": lambda body: f"HTTP/1.1 200 OK\nContent-Length: {len(body)}\n\n".encode() + body,
    "nul-in-value": _h("HTTP/1.1 200 OK", "Content-Length: LEN", "X-A: a\0b"),
}


@pytest.mark.long(keep=("two-lengths", "no-colon", "megabyte-line"))
@pytest.mark.parametrize("name", list(HEADS))
def test_a_strange_head_on_the_lane_once_per_object(setup: Setup, name: str) -> None:
    server = setup.serve(_head_once(setup, HEADS[name]))
    took = pulled(setup, server)
    assert server.fired.is_set()
    assert took < 15, took
    no_loop(server, 6)


SLOW_ALWAYS = {"negative", "inner-space", "space-before-colon", "obs-fold"}  # 9 s each


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=LONG_ONLY) if n in SLOW_ALWAYS else n for n in HEADS]
)
@pytest.mark.long(keep=("two-lengths", "chunked-and-length"))
def test_a_strange_head_always_for_one_object(setup: Setup, name: str) -> None:
    """The per-object path meets it too: the pull succeeds (a head it can read) or is
    refused cleanly, in time."""
    target = setup.path_of("d/f007")
    server = setup.serve(_head_always(target, HEADS[name]))
    either(setup, server)
    assert server.fired.is_set()
    no_loop(server, 8)


def test_a_status_line_without_reason_and_lower_case_names_keep_the_lane(setup: Setup) -> None:
    def script(server: Hostile, conn: Conn) -> None:
        while (path := conn.request()) is not None:
            body = server.file(path)
            if body is None:
                conn.send(server.plain(path))
                continue
            conn.send(
                b"HTTP/1.1 200\r\ncontent-length: %d\r\nconnection: keep-alive\r\n\r\n" % len(body)
                + body
            )

    server = setup.serve(script)
    pulled(setup, server)
    assert server.connections <= 12, server.connections  # the lane stayed on
    no_loop(server, 1)


def test_connection_close_mid_window_then_more_answers(setup: Setup) -> None:
    """Connection: close on the 3rd answer, then the server goes on answering on the
    same connection: those bytes are never read as answers."""

    def script(server: Hostile, conn: Conn) -> None:
        while (path := conn.request()) is not None:
            body = server.file(path)
            if conn.nth == 3 and body is not None:
                conn.send(response(body, extra="Connection: close\r\n"))
                wrong = setup.archive / "summary"
                while (following := conn.request(wait=0.3)) is not None:
                    conn.send(response(wrong.read_bytes()) if following else b"")
                return
            conn.send(server.plain(path))

    server = setup.serve(script)
    pulled(setup, server)
    no_loop(server, 16)  # each connection's unanswered window is sent again: no loop


# ----- bodies ---------------------------------------------------------------------------------
def test_a_body_that_splits_into_a_forged_next_answer(setup: Setup) -> None:
    """The classic splitting trick: an answer's body carries, past its Content-Length,
    a whole forged answer for the next request (another valid object's bytes) and the
    server then answers every request too: the lane is one answer out of step."""
    files = setup.objects()
    forged = response(setup.archive.joinpath(files[0].lstrip("/")).read_bytes())

    def bad(server: Hostile, conn: Conn, path: str) -> None:
        conn.send(server.plain(path) + forged)
        plain(server, conn)

    server = setup.serve(_pipelined_once(bad))
    pulled(setup, server)
    no_loop(server)


def test_a_forged_404_split_into_the_next_answer(setup: Setup) -> None:
    """The same, but the forged answer is a 404: the lane's 4xx is final, like the
    per-object path's, so the next object looks missing. (A hostile server could send
    the 404 outright; documented, not a defect: the pull fails cleanly.)"""

    def bad(server: Hostile, conn: Conn, path: str) -> None:
        conn.send(server.plain(path) + response(b"no\n", "404 Not Found"))
        plain(server, conn)

    server = setup.serve(_pipelined_once(bad))
    line = either(setup, server)
    assert line == "pulled" or "missing" in line, line


def test_a_big_object_streamed_mid_window_then_a_wrong_one(setup: Setup) -> None:
    """The 3 MiB object streamed in the middle of a window, then the next answer is
    another object's bytes (once): the lane stops there, the rest one by one."""
    big = setup.path_of(f"d/f{40 // 2:03}big")
    other = setup.archive.joinpath(setup.objects()[0].lstrip("/")).read_bytes()
    done = threading.Event()

    def script(server: Hostile, conn: Conn) -> None:
        previous = None
        while (path := conn.request()) is not None:
            if previous == big and not done.is_set():
                done.set()
                conn.send(response(other))
            else:
                conn.send(server.plain(path))
            previous = path

    server = setup.serve(script)
    pulled(setup, server)
    assert done.is_set()
    no_loop(server)


def test_a_big_object_cut_short_then_closed(setup: Setup) -> None:
    big = setup.path_of(f"d/f{40 // 2:03}big")
    done = threading.Event()

    def script(server: Hostile, conn: Conn) -> None:
        while (path := conn.request()) is not None:
            data = server.plain(path)
            if path == big and not done.is_set():
                done.set()
                conn.send(data[: len(data) // 2])
                return
            conn.send(data)

    server = setup.serve(script)
    pulled(setup, server)
    assert done.is_set()


def test_a_big_object_stalled_mid_body_once(setup: Setup) -> None:
    """The streamed object stalls halfway (inside the decoder's reads): the lane gives
    up within the timeout and the per-object path fetches it."""
    big = setup.path_of(f"d/f{40 // 2:03}big")

    def script(server: Hostile, conn: Conn) -> None:
        while (path := conn.request()) is not None:
            data = server.plain(path)
            if path == big and not server.fired.is_set():
                server.fired.set()
                conn.send(data[: len(data) // 2])
                conn.stall()
                return
            conn.send(data)

    server = setup.serve(script)
    took = pulled(setup, server)
    assert server.fired.is_set()
    assert took < 15, took


def test_a_big_object_with_a_body_longer_than_said(setup: Setup) -> None:
    """The big object's head says 1 MiB less than it sends, every time: refused."""
    big = setup.path_of(f"d/f{40 // 2:03}big")

    def script(server: Hostile, conn: Conn) -> None:
        while (path := conn.request()) is not None:
            body = server.file(path)
            if path == big and body is not None:
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body) - (1 << 20)}\r\n\r\n"
                conn.send(head.encode() + body)
                continue
            conn.send(server.plain(path))

    server = setup.serve(script)
    line = refused(setup, server)
    assert "Traceback" not in line
    assert server.asked[big] <= 6, server.asked[big]


def test_a_window_of_huge_claims_stays_bounded(setup: Setup) -> None:
    """Every content object claims 900 MiB (under the 1 GiB limit) and sends zeros as
    fast as the client reads: refused at the object's prefix, memory bounded."""

    def script(server: Hostile, conn: Conn) -> None:
        while (path := conn.request()) is not None:
            if not is_object(path):
                conn.send(server.plain(path))
                continue
            conn.send(f"HTTP/1.1 200 OK\r\nContent-Length: {900 << 20}\r\n\r\n".encode())
            chunk = bytes(1 << 16)
            for _ in range(900 << 4):
                conn.send(chunk)

    server = setup.serve(script)
    rss = _max_rss_of_pull(setup, server)
    assert rss < 300 << 20, f"{rss >> 20} MiB"


def _max_rss_of_pull(setup: Setup, server: Hostile) -> int:
    """Refused as a pull must be; the pull's peak resident memory, in bytes."""
    code = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stdout.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
        "sys.stderr.write(r.stderr)\n"
        "sys.exit(r.returncode)\n"
    )
    argv = sapwood_argv("pull", server.remote, "main", repo=setup.local)
    before = refs(setup.local)
    result = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=WITHIN + 30,
        env=dict(os.environ) | ENV,
    )
    lines = result.stderr.splitlines()
    assert result.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("sapwood: "), result.stderr
    assert refs(setup.local) == before
    fsck_clean(setup.local)
    return int(result.stdout) * 1024


# ----- stopping: an error elsewhere, a Ctrl-C -------------------------------------------------
def _slow(delay: float, missing: str | None = None) -> Script:
    """Every content answer after ``delay`` seconds (well within the timeout); a 404
    for ``missing``."""

    def script(server: Hostile, conn: Conn) -> None:
        while (path := conn.request()) is not None:
            if path == missing:
                conn.send(response(b"gone\n", "404 Not Found"))
                continue
            if is_object(path) and server.stopping.wait(delay):
                return
            conn.send(server.plain(path))

    return script


def test_a_missing_object_fails_the_pull_without_waiting_for_every_group(wide: Setup) -> None:
    """A server answering each object in 0.25 s and a 404 for one: the pull must fail
    at once (as before the lane: within a few answers), not once every running group
    of 64 has been fetched to its end (16 s a group here, 30 min with the default
    30 s timeout and a server answering in 29 s)."""
    missing = wide.path_of("d/f010")  # group 2 runs by then
    server = wide.serve(_slow(0.25, missing))
    started = time.monotonic()
    result = pull(wide.local, server.remote, "main", env=ENV | {"SAPWOOD_HTTP_CONNECTIONS": "2"})
    took = time.monotonic() - started
    assert result.returncode != 0
    assert "missing" in result.stderr, result.stderr
    assert took < 8, f"failed after {took:.1f} s"


def test_a_ctrl_c_during_windows_ends_the_pull_soon_and_clean(wide: Setup) -> None:
    server = wide.serve(_slow(0.25))
    before = refs(wide.local)
    argv = sapwood_argv("pull", server.remote, "main", repo=wide.local)
    env = dict(os.environ) | ENV | {"SAPWOOD_HTTP_CONNECTIONS": "2"}
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(3)
    assert process.poll() is None
    interrupted = time.monotonic()
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    took = time.monotonic() - interrupted
    assert process.returncode != 0
    assert "Traceback" not in err, err
    assert refs(wide.local) == before
    fsck_clean(wide.local)
    assert took < 5, f"ended {took:.1f} s after the Ctrl-C"


def test_a_ctrl_c_during_windows_leaves_the_repository_clean(wide: Setup) -> None:
    """The defence that holds whatever the wait: no ref moved, fsck clean, no
    traceback, one line; the next pull succeeds."""
    server = wide.serve(_slow(0.05))
    before = refs(wide.local)
    argv = sapwood_argv("pull", server.remote, "main", repo=wide.local)
    env = dict(os.environ) | ENV | {"SAPWOOD_HTTP_CONNECTIONS": "2"}
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(2.5)
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert refs(wide.local) == before
    fsck_clean(wide.local)
    server.script = plain
    pulled(wide, server)


# ----- TLS ------------------------------------------------------------------------------------
@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    return trusted_tls(tmp_path, monkeypatch)


def test_tls_answers_are_pipelined(setup: Setup, tls: ssl.SSLContext) -> None:
    server = setup.serve(plain, tls=tls)
    pulled(setup, server)
    assert server.connections <= 12, server.connections  # the lane stayed on
    no_loop(server, 1)


@pytest.mark.parametrize("how", ["ragged-close", "reset", "wrong-object"])
def test_tls_connections_that_break_after_k_answers(
    setup: Setup, tls: ssl.SSLContext, how: str
) -> None:
    """Every pipelined TLS connection breaks after 3 answers: closed without
    close_notify, reset, or answering another object."""
    other = setup.archive.joinpath(setup.objects()[0].lstrip("/")).read_bytes()

    def script(server: Hostile, conn: Conn) -> None:
        while (path := conn.request()) is not None:
            if conn.nth <= 3 or not is_object(path) or not conn.buffer:
                conn.send(server.plain(path))
                continue
            server.fired.set()
            if how == "wrong-object":
                conn.send(response(other))
                continue
            raw = conn.sock
            if how == "reset":
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            os.close(raw.detach())  # no close_notify
            return

    server = setup.serve(script, tls=tls)
    took = pulled(setup, server)
    assert server.fired.is_set()
    assert took < 20, took
    no_loop(server)


@LONG_ONLY
def test_tls_a_handshake_that_stalls_is_given_up_in_time(setup: Setup, tls: ssl.SSLContext) -> None:
    """Every connection stalls before its TLS handshake: the pull is refused in time
    (each path's connect timeout), cleanly; then the server behaves."""

    def stalled(server: Hostile, conn: Conn) -> None:
        plain(server, conn)  # never reached while the handshake stalls

    server = setup.serve(stalled, tls=tls)
    serve_one = server._serve

    def stalling(sock: socket.socket) -> None:
        if server.script is stalled:
            with sock:
                server.stopping.wait(60)
            return
        serve_one(sock)

    server._serve = stalling  # type: ignore[method-assign]
    line = either(setup, server)
    assert line != "pulled"


def test_tls_handshakes_that_stall_now_and_then_cost_one_timeout(
    wide: Setup, tls: ssl.SSLContext
) -> None:
    """Every other connection stalls before its TLS handshake (a balancer with one dead
    backend): the lane's connect times out; it should not try again for every group
    (each try costs the connect timeout, 10 s by default), but be off as after any
    timeout."""
    server = wide.serve(plain, tls=tls)
    serve_one = server._serve
    count = Counter[str]()
    lock = threading.Lock()

    def stalling(sock: socket.socket) -> None:
        with lock:
            count["all"] += 1
            stall = count["all"] % 2 == 0 and server.script is plain
            count["stalled"] += stall
        if stall:
            with sock:
                server.stopping.wait(60)
            return
        serve_one(sock)

    server._serve = stalling  # type: ignore[method-assign]
    took = pulled(wide, server, env={"SAPWOOD_HTTP_CONNECTIONS": "2"})
    assert count["stalled"] <= 3, (count, took)


# ----- endless interim answers ------------------------------------------------------------------
@pytest.mark.parametrize("times", [1, pytest.param(None, marks=LONG_ONLY)])
def test_endless_100_continue_for_one_object(setup: Setup, times: int | None) -> None:
    """One object's answer is 100 Continue heads, fast, for ever (its first ask, or every
    ask): each path gives up on the head within its deadline; pulled, or refused."""
    target = setup.path_of("d/f007")

    def script(server: Hostile, conn: Conn) -> None:
        while (path := conn.request()) is not None:
            if path == target and (times is None or server.asked[path] <= times):
                server.fired.set()
                interim = b"HTTP/1.1 100 Continue\r\n\r\n" * 256
                while not server.stopping.is_set():
                    conn.send(interim)
                    time.sleep(0.001)
                return
            conn.send(server.plain(path))

    server = setup.serve(script)
    started = time.monotonic()
    line = either(setup, server)
    took = time.monotonic() - started
    assert server.fired.is_set()
    assert (line == "pulled") == (times == 1), line
    assert took < WITHIN, took


@pytest.mark.parametrize(
    "stalled",
    [
        "/summary",
        "dirtree",
        pytest.param("filez", marks=LONG_ONLY),
        "commitmeta",  # attack14 6
    ],
)
def test_a_ctrl_c_while_the_lane_waits_for_a_head(setup: Setup, stalled: str) -> None:
    """The summary's (main thread), the dirtrees' or the content's (pool threads)
    answers never come: a Ctrl-C ends the pull at once, as interrupted, nothing moved.
    (attack14 5: for a pool thread it ended only once that thread's fetch had spent
    every attempt: the lane's wait, then the per-object path's retries, 6 s x 5 here,
    minutes with the defaults.)"""

    def script(server: Hostile, conn: Conn) -> None:
        while (path := conn.request()) is not None:
            if path == stalled or path.endswith("." + stalled):
                server.fired.set()
                conn.stall()
                return
            conn.send(server.plain(path))

    _interrupt_when_stalled(setup, setup.serve(script))


def test_a_ctrl_c_while_a_delta_part_stalls(setup: Setup) -> None:
    """A static delta on offer; its first part's answer never comes (a pool thread
    fetches it): a Ctrl-C ends the pull at once, as interrupted, nothing moved
    (attack14 6: it waited for every attempt of that fetch)."""
    sapwood_ok(setup.archive, "static-delta", "generate", "--to", setup.commit)
    sapwood_ok(setup.archive, "summary", "-u")

    def script(server: Hostile, conn: Conn) -> None:
        while (path := conn.request()) is not None:
            if path.startswith("/deltas/") and path.endswith("/0"):
                server.fired.set()
                conn.stall()
                return
            conn.send(server.plain(path))

    _interrupt_when_stalled(setup, setup.serve(script))


def _interrupt_when_stalled(setup: Setup, server: Hostile) -> None:
    """Pull from ``server``, Ctrl-C once its script has stalled an answer: the pull ends
    within 3 s as interrupted (130), no ref moved, fsck clean."""
    before = refs(setup.local)
    argv = sapwood_argv("pull", server.remote, "main", repo=setup.local)
    env = dict(os.environ) | {"SAPWOOD_HTTP_TIMEOUT": "6"}
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 10
    while not server.fired.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.fired.is_set()
    time.sleep(0.3)
    interrupted = time.monotonic()
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    took = time.monotonic() - interrupted
    assert process.returncode == 130, err
    assert err == "sapwood: interrupted\n", err
    assert refs(setup.local) == before
    fsck_clean(setup.local)
    assert took < 3, f"ended {took:.1f} s after the Ctrl-C"
