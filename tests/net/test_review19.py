"""Review 19 (session 14): the pipelined lane's TCP_QUICKACK and the default of 4
connections, attacked with real servers on 127.0.0.1 (/work/plan/review19.md).

Guards for defences that held: a lane connection closed under a read ends the lane's
work (no raw OSError from the setsockopt); the default bounds a pull to 4 connections
(and an odd SAPWOOD_HTTP_CONNECTIONS to its own count); a server that answers in many
tiny segments, or stalls each head after the lane acknowledged at once, still ends in
time with one line, no ref moved, fsck clean.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from store.pull import pipelined
from store.pull.budget import Budget
from store.pull.http import Fetcher
from store.pull.pipelined import _Connection, _End, _Target
from store.pull.settings import FetchSettings
from tests.helpers import write_tree
from tests.net.repos import (
    add_remote,
    archive_of,
    fsck_clean,
    local_repo,
    publish,
    pull,
    refs,
    sapwood_ok,
)
from tests.net.servers import Nginx, trusted_tls
from tests.net.test_pipelined_attacks import (
    Conn,
    Hostile,
    Setup,
    is_object,
    make_setup,
    plain,
    pulled,
    refused,
    tree_files,
)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    """A tree of 40 small files and a big one served by a Hostile server's script."""
    yield from make_setup(tmp_path)


def _split_tails(server: Hostile, conn: Conn) -> None:
    """Each answer with its last 16 bytes in a write of their own: Nagle (on, as nginx
    leaves it for pipelined requests) holds them until the client acknowledges."""
    while (path := conn.request()) is not None:
        data = server.plain(path)
        conn.send(data[:-16])
        conn.send(data[-16:])


def _one_by_one(url: str, names: list[str]) -> tuple[list[tuple[str, bytes]], float]:
    with Fetcher(url, FetchSettings(retries=0)) as fetcher:
        started = time.monotonic()
        got = [
            answer
            for name in names
            for answer in fetcher.fetch_many([name], 1 << 20, lambda i, body: body.read())
        ]
        return got, time.monotonic() - started


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_split_tails_do_not_wait_for_delayed_acks_over_http_or_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    """The session's TCP_QUICKACK (store/pull/pipelined.py _Connection.receive) also
    works through TLS (ssl.SSLSocket.setsockopt, OpenSSL reading the socket): 40
    answers asked one by one, each tail written apart, in far less than 40 delayed
    acknowledgements (1.6 s)."""
    root = tmp_path / "root"
    root.mkdir()
    names = [f"o{number}" for number in range(40)]
    for name in names:
        (root / name).write_bytes(name.encode() * 1000)
    context = trusted_tls(tmp_path, monkeypatch) if scheme == "https" else None
    server = Hostile(root, _split_tails, tls=context).start()
    try:
        got, took = _one_by_one(server.url, names)
    finally:
        server.stop()
    assert got == [(name, name.encode() * 1000) for name in names]
    assert took < 0.8, f"{took:.2f} s for 40 answers over {scheme}"


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_lane_connection_closed_under_a_read_ends_its_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    """The setsockopt now runs before every recv: on a socket closed meanwhile (EBADF)
    it must end the lane's work on it (_End, "broken"), as the recv did, never let an
    OSError out of the lane."""
    context = trusted_tls(tmp_path, monkeypatch) if scheme == "https" else None
    server = Hostile(tmp_path, plain, tls=context).start()
    try:
        settings = FetchSettings(retries=0, read_timeout=2.0)
        client = None
        if context is not None:
            client = ssl.create_default_context()
        budget = Budget(1)
        with budget.slot() as slot:
            conn = _Connection(_Target(server.url), settings, client, slot)
            conn.send(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
            assert conn.receive() > 0  # the lane reads (the flag set on this socket)
            conn.close()
            with pytest.raises(_End) as ended:
                conn.receive()
            assert ended.value.kind == "broken"
            assert "Errno 9" in ended.value.reason or "closed" in ended.value.reason
    finally:
        server.stop()


def test_a_closed_lane_connection_read_with_a_deadline_ends_its_work(tmp_path: Path) -> None:
    """_head and _read_error_page read with a deadline (receive(left)): the same
    closed socket must end the lane's work there too (review19 F1: the settimeout
    before the try, and the one in the finally, let a raw OSError out; fixed in
    914c9bf)."""
    server = Hostile(tmp_path, plain).start()
    try:
        with Budget(1).slot() as slot:
            conn = _Connection(_Target(server.url), FetchSettings(retries=0), None, slot)
            conn.close()
            with pytest.raises(_End):
                conn.receive(1.0)
    finally:
        server.stop()


def test_a_python_without_tcp_quickack_still_reads_on_the_lane(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """socket.TCP_QUICKACK is Linux's: looked up once (9040571); without it the lane
    reads as before the flag (no AttributeError out of the lane, every answer
    pipelined)."""
    monkeypatch.setattr(pipelined, "_QUICKACK", None)
    names = [f"o{number}" for number in range(40)]
    for name in names:
        (tmp_path / name).write_bytes(name.encode() * 100)
    server = Hostile(tmp_path, plain).start()
    try:
        with Fetcher(server.url, FetchSettings(retries=0)) as fetcher:
            got = list(fetcher.fetch_many(names, 1 << 20, lambda i, body: body.read()))
    finally:
        server.stop()
    assert got == [(name, name.encode() * 100) for name in names]
    assert server.connections == 1  # the lane stayed on: one connection, pipelined


def test_the_default_pull_holds_at_most_4_connections(setup: Setup) -> None:
    """The new default (store/pull/settings.py connections=4) bounds what a pull opens
    at once, the metadata pool (connections // 2 = 2 threads) and the main thread
    included."""
    server = setup.serve(plain)
    pulled(setup, server)
    assert 0 < server.most_open <= 4, (server.most_open, server.connections)


@pytest.mark.parametrize("connections", ["1", "3"])
def test_odd_connection_counts_pull_whole_within_their_bound(
    setup: Setup,
    connections: str,
) -> None:
    """1 (a metadata pool of max(1, 0) = 1 thread) and 3 (1 thread) with a budget that
    disagrees with the pools' sizes: no deadlock, never more open than asked."""
    server = setup.serve(plain)
    pulled(setup, server, env={"SAPWOOD_HTTP_CONNECTIONS": connections})
    assert 0 < server.most_open <= int(connections), (server.most_open, server.connections)


def _tiny_segments(server: Hostile, conn: Conn) -> None:
    """Every answer in 64-byte writes with Nagle off: many tiny segments, each
    acknowledged at once by the lane now."""
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while (path := conn.request()) is not None:
        data = server.plain(path)
        for start in range(0, len(data), 64):
            conn.send(data[start : start + 64])


def test_answers_in_tiny_segments_still_pull_whole(setup: Setup) -> None:
    server = setup.serve(_tiny_segments)
    pulled(setup, server)


def _slow_heads(server: Hostile, conn: Conn) -> None:
    """Plain until the first object; then every object's head a byte a second, for
    ever (a slowloris head on every connection, the lane acknowledging each byte)."""
    while (path := conn.request()) is not None:
        data = server.plain(path)
        if not is_object(path):
            conn.send(data)
            continue
        server.fired.set()
        for byte in data[:200]:
            if server.stopping.wait(1.0):
                return
            conn.send(bytes([byte]))
        conn.stall()
        return


def test_a_slowloris_head_on_every_connection_is_refused_in_time(
    setup: Setup,
) -> None:
    server = setup.serve(_slow_heads)
    line = refused(setup, server)
    assert server.fired.is_set()
    assert "no complete response head within 2 s" in line, line


def test_a_default_pull_from_nginx_uses_at_most_4_connections(
    tmp_path: Path, nginx: Callable[[Path], Nginx]
) -> None:
    """Real nginx (sendfile, tcp_nopush: the Nagle case TCP_QUICKACK is for), the
    default settings: the pull lands whole on no more than the default's 4 connections
    (nginx's $connection numbers), every object asked once."""
    archive = tmp_path / "archive"
    commit = archive_of(archive, write_tree(tmp_path / "src", tree_files(600)))
    server = nginx(archive)
    local = local_repo(tmp_path / "local")
    add_remote(local, server.url, "n")
    result = pull(local, "n", "main")
    assert result.returncode == 0, result.stderr
    assert refs(local)["n:main"] == commit
    fsck_clean(local)
    logged = server.requests()
    objects = [r for r in logged if r.path.endswith(".filez")]
    assert len(objects) == len({r.path for r in objects}) > 600
    assert 1 <= len({r.connection for r in logged}) <= 4, sorted({r.connection for r in logged})


@pytest.mark.parametrize("connections", ["1", "3", "4"])
def test_an_update_through_a_delta_with_pools_larger_than_the_budget(
    tmp_path: Path, nginx: Callable[[Path], Nginx], connections: str
) -> None:
    """A delta's parts are fetched by the content pool while the applying thread fills
    batches bounded to 4 x connections pieces, and the metadata pool (connections // 2,
    at least 1) walks what the delta left: with 1 connection, 3 (an odd count) and the
    default 4, no wait on a slot another waiter holds; the update lands whole."""
    files = tree_files(150)
    archive = tmp_path / "archive"
    old = archive_of(archive, write_tree(tmp_path / "v1", files))
    server = nginx(archive)
    local = local_repo(tmp_path / "local")
    add_remote(local, server.url, "n")
    env = {"SAPWOOD_HTTP_CONNECTIONS": connections}
    first = pull(local, "n", "main", env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    files |= {f"d/f{n:03}": f"changed {n}\n" for n in range(0, 150, 3)}
    new = archive_of(archive, write_tree(tmp_path / "v2", files))
    sapwood_ok(archive, "static-delta", "generate", "--from", old, "--to", new)
    publish(archive)
    server.clear_log()
    result = pull(local, "n", "main", env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert refs(local)["n:main"] == new
    fsck_clean(local)
    assert server.count(r"^/deltas/") >= 2  # superblock and a part: the delta was used
    assert server.count(r"\.filez$") == 0  # nothing fetched one by one beside it
    assert 1 <= len({r.connection for r in server.requests()}) <= int(connections)
