"""The connections of a pull (store/pull/budget.py), its halts, and what no longer
costs a connection or the lane (review12.md, findings 1, 5, 6, 7; attack14.md).

SAPWOOD_HTTP_CONNECTIONS bounds the connections open at once, whichever threads and
ways (the pipelined lane, the per-object path) fetch; an expected 404 on the lane
keeps its connection; a halt imports nothing and ends a connect in progress; one slow
answer does not turn the lane off for the pull.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from store.errors import NetworkError
from store.pull.budget import Budget, Halted, open_socket
from store.pull.http import Fetcher
from store.pull.settings import FetchSettings
from tests.net.test_pipelined import (
    Answer,
    RawServer,
    Setup,
    _chunked,
    plain,
    pulled,
    response,
    setup,  # noqa: F401  (the fixture)
)


def _a_500_now_and_then(server: RawServer, path: str, seen: int, nth: int) -> Answer:
    """Every 7th object's first ask fails: the lane gives that piece of work to the
    per-object path, and the threads carry connections of both ways."""
    if path.endswith(".filez") and seen == 1 and zlib.crc32(path.encode()) % 7 == 0:
        return response(b"", "500 Oops"), ""
    return server.plain(path), ""


WAYS: dict[str, Callable[[RawServer, str, int, int], Answer]] = {
    "lane": plain,
    "per-object": _chunked,  # the lane cannot read chunked bodies: off for the pull
    "both": _a_500_now_and_then,
}


@pytest.mark.parametrize("connections", [1, 2])
@pytest.mark.parametrize("way", sorted(WAYS))
def test_the_connections_setting_bounds_the_connections_open_at_once(
    setup: Setup,  # noqa: F811  (the fixture)
    way: str,
    connections: int,
) -> None:
    """Before: 3 open at once for 1, 13 for 8 (a lane and a per-object connection a
    thread, the metadata pool's threads, the main thread's)."""
    server = setup.serve(WAYS[way])
    pulled(setup, server, env={"SAPWOOD_HTTP_CONNECTIONS": str(connections)})
    assert 0 < server.most_open <= connections, (server.most_open, server.connections)


# ----- a Fetcher against a raw server ---------------------------------------------------
@pytest.fixture
def files(tmp_path: Path) -> Path:
    root = tmp_path / "files"
    root.mkdir()
    for number in range(40):
        (root / f"o{number}").write_bytes(f"object {number}\n".encode() * 20)
    return root


def _read(index: int, body: object) -> bytes:
    return body.read()  # type: ignore[attr-defined, no-any-return]


def test_an_expected_404_on_the_lane_keeps_its_connection(
    raw: Callable[[Callable[..., Answer]], RawServer],
) -> None:
    """A .commitmeta or summary.sig of an unsigned commit or summary: the page is read
    and the connection asked again (before: a new connection each)."""
    server = raw(plain)
    with Fetcher(server.url, FetchSettings(retries=0)) as fetcher:
        for name in ("missing-1", "o1", "missing-2", "o2"):
            try:
                list(fetcher.fetch_many([name], 1 << 20, _read))
            except NetworkError as exc:
                assert exc.status == 404 and name.startswith("missing")
    assert server.connections == 1, server.connections
    assert server.asked["/missing-1"] == 1


def test_a_404_within_a_window_still_ends_its_connection(
    raw: Callable[[Callable[..., Answer]], RawServer],
) -> None:
    """Answers after the 404 were asked for already: not kept (read for nothing)."""
    server = raw(plain)
    with Fetcher(server.url, FetchSettings(retries=0)) as fetcher:
        with pytest.raises(NetworkError):
            list(fetcher.fetch_many(["o1", "missing", "o2", "o3"], 1 << 20, _read))
        list(fetcher.fetch_many(["o4"], 1 << 20, _read))
    assert server.connections == 2, server.connections


def test_one_slow_head_does_not_turn_the_lane_off(
    raw: Callable[[Callable[..., Answer]], RawServer],
) -> None:
    """The late object and the rest of its call go one by one; the next call is
    pipelined again (before: one by one for the rest of the pull)."""

    def answer(server: RawServer, path: str, seen: int, nth: int) -> Answer:
        if path == "/o5" and seen == 1:
            return b"", "stall"
        return server.plain(path), ""

    server = raw(answer)
    names = [f"o{number}" for number in range(20)]
    settings = FetchSettings(retries=0, read_timeout=1, connections=1)
    with Fetcher(server.url, settings) as fetcher:
        assert len(list(fetcher.fetch_many(names, 1 << 20, _read))) == 20
        server.most_queued = 0
        more = [f"o{number}" for number in range(20, 40)]
        assert len(list(fetcher.fetch_many(more, 1 << 20, _read))) == 20
    assert server.most_queued > 4, server.most_queued


def test_slow_heads_again_and_again_turn_the_lane_off(
    raw: Callable[[Callable[..., Answer]], RawServer],
) -> None:
    """Each call's fifth object is late: a failure each; MAX_FAILURES of them and the
    lane is off (no more read timeouts waited on its behalf)."""

    def answer(server: RawServer, path: str, seen: int, nth: int) -> Answer:
        if nth == 4 and seen == 1:
            return b"", "stall"
        return server.plain(path), ""

    server = raw(answer)
    settings = FetchSettings(retries=0, read_timeout=0.3, connections=1)
    with Fetcher(server.url, settings) as fetcher:
        for call in range(12):
            names = [f"o{number}" for number in range(call * 3, call * 3 + 6)]
            list(fetcher.fetch_many(names, 1 << 20, _read))
        lane = fetcher._lane
        assert lane is not None and lane.off


# ----- halts ------------------------------------------------------------------------------
def test_a_halt_imports_nothing() -> None:
    """halt() on a pull that never needed the per-object path: urllib3 stays out."""
    code = (
        "import sys\n"
        "from store.pull.http import Fetcher\n"
        "from store.pull.settings import FetchSettings\n"
        "fetcher = Fetcher('http://127.0.0.1:9/', FetchSettings())\n"
        "fetcher.halt()\n"
        "try:\n"
        "    list(fetcher.fetch_many(['x'], 10, lambda i, b: b.read()))\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('urllib3', 'http')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.splitlines() == ["PullHaltedError", "[]"], out


@pytest.fixture
def never_accepting() -> Iterator[int]:
    """A port whose listener never accepts and whose backlog is full: a connect to it
    waits (its SYNs dropped) until its timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filled = []
    for _ in range(8):
        sock = socket.socket()
        sock.settimeout(0.3)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            break
        filled.append(sock)
    yield port
    for sock in filled:
        sock.close()
    listener.close()


@pytest.mark.parametrize("way", ["lane", "per-object"])
def test_a_halt_ends_a_connect_in_progress(never_accepting: int, way: str) -> None:
    """Before: the connect waited out its timeout (attack14.md: a Ctrl-C as a pull
    connects waited 10 s by default)."""
    settings = FetchSettings(retries=0, connect_timeout=20, read_timeout=20)
    fetcher = Fetcher(f"http://127.0.0.1:{never_accepting}/", settings)
    outcome: list[BaseException | None] = []

    def fetch() -> None:
        try:
            if way == "lane":
                list(fetcher.fetch_many(["a", "b"], 10, _read))
            else:
                fetcher.fetch("a", 10, lambda body: body.read())
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    time.sleep(0.5)
    assert worker.is_alive(), outcome  # connecting still
    halted = time.monotonic()
    fetcher.halt()
    worker.join(5)
    took = time.monotonic() - halted
    fetcher.close()
    # ended, where the connect timeout (20 s) had it wait; how soon, beside the suite's
    # other workers, is the join's bound (review18 R18-5)
    assert not worker.is_alive(), took
    assert isinstance(outcome[0], Halted), outcome


def test_a_halt_just_before_a_connect_starts_ends_it_at_once(never_accepting: int) -> None:
    """review13 L1: a halt between a socket's first watch and its connect finds it not
    yet connecting. The connect must not then wait out its timeout (10 s here) to a
    host that drops SYNs. (It never did on Linux, measured: the shutdown of an
    unconnected socket marks it shut, and the poll of Python's connect with a timeout
    returns at once, a socket not connected that the watch after connect refused; the
    connect is now non-blocking and watched once started, which needs no such quirk.)"""
    budget = Budget(1)
    with budget.slot() as slot:

        def watch_then_halt(sock: socket.socket) -> None:
            slot.watch(sock)
            if not budget.halted.is_set():
                budget.halt()  # as a Ctrl-C lands just after the first watch

        started = time.monotonic()
        with pytest.raises(Halted):
            open_socket("127.0.0.1", never_accepting, 10, watch_then_halt)
        assert time.monotonic() - started < 1


def test_a_socket_opened_watched_is_left_with_its_timeout(
    raw: Callable[[Callable[..., Answer]], RawServer],
) -> None:
    """open_socket connects without blocking, then hands the socket back as
    socket.create_connection would: blocking, with the timeout given."""
    server = raw(plain)
    budget = Budget(1)
    with budget.slot() as slot:
        sock = open_socket("127.0.0.1", server.port, 7.5, slot.watch)
    with sock:
        assert sock.gettimeout() == 7.5 and sock.getpeername()[1] == server.port


def test_a_connection_made_as_the_pull_halts_is_closed_at_once(
    raw: Callable[[Callable[..., Answer]], RawServer],
) -> None:
    """A socket handed to a slot after the halt is closed there, never used: no
    request goes, no read timeout is waited (review12.md, 6b)."""
    server = raw(plain)
    fetcher = Fetcher(server.url, FetchSettings(retries=0, read_timeout=20))
    with fetcher._budget.slot() as slot:
        fetcher.halt()
        sock = socket.create_connection(("127.0.0.1", server.port))
        started = time.monotonic()
        with pytest.raises(Halted):
            slot.watch(sock)
        assert sock.fileno() == -1 and time.monotonic() - started < 1
    fetcher.close()
    assert not server.asked


# ----- the budget itself --------------------------------------------------------------------
def test_a_thread_waits_for_a_slot_and_a_halt_ends_the_wait() -> None:
    budget = Budget(1)
    got: list[object] = []

    def take() -> None:
        try:
            with budget.slot() as slot:
                got.append(slot)
        except Halted as exc:
            got.append(exc)

    with budget.slot():
        waiter = threading.Thread(target=take, daemon=True)
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive() and not got  # every slot taken: it waits
    waiter.join(5)
    assert len(got) == 1 and not isinstance(got[0], Halted)
    with budget.slot():
        waiter = threading.Thread(target=take, daemon=True)
        waiter.start()
        waiter.join(0.3)
        budget.halt()
        waiter.join(5)
    assert isinstance(got[-1], Halted)


def test_a_slot_of_a_generator_closed_on_another_thread_is_not_reused() -> None:
    """A fetch_many generator started on one thread and closed on another gives its
    slot back; the first thread's next fetch takes a slot of its own (it waited for
    ever with one connection: its stale slot was taken for one it held)."""
    budget = Budget(1)

    def fetching() -> Generator[int, None, None]:
        with budget.slot():
            yield 1

    started = fetching()
    results: list[bool] = []

    def first_thread() -> None:
        next(started)
        closed.wait(5)
        with budget.slot() as again:
            results.append(again in budget._busy)

    closed = threading.Event()
    thread = threading.Thread(target=first_thread, daemon=True)
    thread.start()
    time.sleep(0.2)
    started.close()  # on this thread
    closed.set()
    thread.join(5)
    assert results == [True]


def test_nothing_to_fetch_takes_no_slot() -> None:
    """review13 L2: the walk asks fetch_many for an empty list at many levels; with
    every slot held elsewhere it waited for one, to fetch nothing."""
    with Fetcher("http://127.0.0.1:9/", FetchSettings(connections=1)) as fetcher:
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            with fetcher._budget.slot():
                holding.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert holding.wait(10)
            done: list[object] = []
            asker = threading.Thread(
                target=lambda: done.extend(fetcher.fetch_many([], 1 << 20, _read))
            )
            asker.start()
            asker.join(5)
            assert not asker.is_alive() and done == []
        finally:
            release.set()
            holder.join(10)
