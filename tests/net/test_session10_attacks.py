"""Attack17 (X4): session 10's pull changes under a hostile server, a Ctrl-C and a kill.

The connection budget (store/pull/budget.py) under failures, the lane's kept 404
(pipelined.py's _read_error_page), halts during a connect and a window, and the
benchmarks' work filesystem (benchmarks/workfs.py) killed midway. Each pull either
succeeds with the right objects (fsck clean) or fails with one line, in bounded time,
no ref moved; the next pull from a good server succeeds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from store.errors import NetworkError
from store.pull.http import Fetcher
from store.pull.settings import FetchSettings
from tests.helpers import sapwood_argv, wait_for
from tests.net.repos import fsck_clean, refs
from tests.net.servers import HOST
from tests.net.test_pipelined import (
    Answer,
    RawServer,
    Setup,
    _chunked,
    plain,
    pulled,
    refused,
    response,
    serving,
    setup,  # noqa: F401  (the fixture)
)

ROOT = Path(__file__).resolve().parents[2]
LONG = os.environ.get("SAPWOOD_LONG") == "1"
FAST = {"SAPWOOD_HTTP_TIMEOUT": "1", "SAPWOOD_HTTP_RETRIES": "2", "SAPWOOD_HTTP_BACKOFF": "0.05"}


def _meta(path: str) -> bool:
    return path.endswith((".commitmeta", "summary.sig"))


def _some(path: str, seen: int) -> bool:
    """Every 4th content object, its first ask only."""
    return path.endswith(".filez") and seen == 1 and zlib.crc32(path.encode()) % 4 == 0


# ----- the budget under failures --------------------------------------------------------
def _reset(server: RawServer, path: str, seen: int, nth: int) -> Answer:
    if _some(path, seen):
        return b"", "close"
    return server.plain(path), ""


def _five_hundred(server: RawServer, path: str, seen: int, nth: int) -> Answer:
    if _some(path, seen):
        return response(b"oops\n", "500 Oops"), ""
    return server.plain(path), ""


def _stall_once(server: RawServer, path: str, seen: int, nth: int) -> Answer:
    if _some(path, seen):
        whole = server.plain(path)
        return whole[: len(whole) - 10], "stall"
    return server.plain(path), ""


def _huge_404(server: RawServer, path: str, seen: int, nth: int) -> Answer:
    if _meta(path):
        return response(b"x" * (1 << 20), "404 Not Found"), ""
    return server.plain(path), ""


def _lying_404(server: RawServer, path: str, seen: int, nth: int) -> Answer:
    """A 404 whose page is shorter than its Content-Length says, then silence."""
    if _meta(path):
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: 100\r\n\r\n404\n", ""
    return server.plain(path), ""


def _close_in_window(server: RawServer, path: str, seen: int, nth: int) -> Answer:
    """The third answer on each connection cut in its middle (then the connection
    closed), the first time each object is asked."""
    if nth == 2 and seen == 1 and path.endswith(".filez"):
        whole = server.plain(path)
        return whole[: len(whole) // 2], "close"
    return server.plain(path), ""


FAILURES: dict[str, Callable[[RawServer, str, int, int], Answer]] = {
    "reset": _reset,
    "500": _five_hundred,
    "stall": _stall_once,
    "huge-404": _huge_404,
    "lying-404": _lying_404,
    "close-in-window": _close_in_window,
}
DEFAULT_FAILURES = (("reset", 1), ("reset", 2), ("lying-404", 1))
long = pytest.mark.skipif(not LONG, reason="SAPWOOD_LONG=1 runs every pairing")


@pytest.mark.parametrize(
    ("failure", "connections"),
    [
        pytest.param(
            failure, connections, marks=() if (failure, connections) in DEFAULT_FAILURES else long
        )
        for failure in sorted(FAILURES)
        for connections in (1, 2)
    ],
)
def test_the_budget_survives_failures_and_bounds_connections(
    setup: Setup,  # noqa: F811  (the fixture)
    failure: str,
    connections: int,
) -> None:
    """No failure path leaks a slot (the pull would wait for one for ever) nor opens
    more connections than the setting, the per-object path's fallback included."""
    server = setup.serve(FAILURES[failure])
    env = FAST | {"SAPWOOD_HTTP_CONNECTIONS": str(connections)}
    took = pulled(setup, server, env=env)
    assert 0 < server.most_open <= connections, (server.most_open, server.connections)
    assert took < 20, f"pulled in {took:.1f} s"


def test_a_404_forever_with_one_connection_fails_in_time(
    setup: Setup,  # noqa: F811  (the fixture)
) -> None:
    """Every content object 404s: the pull fails with one line, in time, ref unmoved."""

    def answer(server: RawServer, path: str, seen: int, nth: int) -> Answer:
        if path.endswith(".filez"):
            return response(b"no\n", "404 Not Found"), ""
        return server.plain(path), ""

    server = setup.serve(answer)
    line = refused(setup, server, env=FAST | {"SAPWOOD_HTTP_CONNECTIONS": "1"})
    assert "404" in line or "missing" in line, line
    server.answer = plain
    pulled(setup, server, env={"SAPWOOD_HTTP_CONNECTIONS": "1"})


# ----- the kept 404 ---------------------------------------------------------------------
@pytest.fixture
def files(tmp_path: Path) -> Path:
    root = tmp_path / "files"
    root.mkdir()
    for number in range(8):
        (root / f"o{number}").write_bytes(f"object {number}\n".encode() * 20)
    return root


def _read(index: int, body: object) -> bytes:
    return body.read()  # type: ignore[attr-defined, no-any-return]


def _forged(server: RawServer) -> bytes:
    """A 200 whose body is a file the client will ask for next, but the wrong one."""
    return response(b"FORGED " * 10)


def _page(kind: str, server: RawServer) -> tuple[bytes, str]:
    head = "HTTP/1.1 404 Not Found\r\n"
    if kind == "longer":  # says 4, sends 4 and a whole forged answer
        return (head + "Content-Length: 4\r\n\r\n404\n").encode() + _forged(server), ""
    if kind == "shorter":  # says 100, sends 4: the next answer's bytes would be its page
        return (head + "Content-Length: 100\r\n\r\n404\n").encode(), ""
    if kind == "chunked":
        return (head + "Transfer-Encoding: chunked\r\n\r\n4\r\n404\n\r\n0\r\n\r\n").encode(), ""
    if kind == "64k+1":
        size = (64 << 10) + 1
        return (head + f"Content-Length: {size}\r\n\r\n").encode() + b"x" * size, ""
    if kind == "endless":  # no length: a page that ends when the connection does
        return (head + "\r\n").encode() + b"x" * 4096, "stall"
    raise AssertionError(kind)


PAGES = ("longer", "shorter", "chunked", "64k+1", "endless")


@pytest.mark.parametrize("kind", PAGES)
def test_a_hostile_404_page_never_becomes_the_next_answer(
    raw: Callable[[Callable[..., Answer]], RawServer], kind: str
) -> None:
    """A 404 on the lane, then the next fetch on the kept (or not) connection: the
    next file's bytes are its own, never the 404 page's rest or a forged answer sent
    with it; each fetch ends within the read timeout."""

    def answer(server: RawServer, path: str, seen: int, nth: int) -> Answer:
        if path == "/missing":
            return _page(kind, server)
        return server.plain(path), ""

    server = raw(answer)
    settings = FetchSettings(retries=0, read_timeout=1.0, connect_timeout=1.0, connections=1)
    started = time.monotonic()
    with Fetcher(server.url, settings) as fetcher:
        with pytest.raises(NetworkError) as caught:
            list(fetcher.fetch_many(["missing"], 1 << 20, _read))
        assert caught.value.status == 404
        for name in ("o1", "o2", "o3"):
            got = [body for _, body in fetcher.fetch_many([name], 1 << 20, _read)]
            assert got == [(server.root / name).read_bytes()], (name, got[:1])
    assert time.monotonic() - started < 6


def test_a_forged_answer_sent_late_after_a_kept_404_is_not_read(
    raw: Callable[[Callable[..., Answer]], RawServer],
) -> None:
    """The 404's page exact, then 0.2 s later (after the client kept the connection)
    a whole forged 200: the next request's answer must not be the forged one."""

    def answer(server: RawServer, path: str, seen: int, nth: int) -> Answer:
        if path == "/missing":

            def later() -> None:
                time.sleep(0.2)
                with contextlib.suppress(OSError):
                    sock.sendall(_forged(server))

            threading.Thread(target=later, daemon=True).start()
            return response(b"404\n", "404 Not Found"), ""
        return server.plain(path), ""

    server = raw(answer)
    sock: socket.socket
    original = server._serve

    def serve(conn: socket.socket) -> None:
        nonlocal sock
        sock = conn
        original(conn)

    # mypy types the instance's method slot as the class's unbound function
    server._serve = serve  # type: ignore[method-assign, assignment]
    settings = FetchSettings(retries=0, read_timeout=1.0, connect_timeout=1.0, connections=1)
    with Fetcher(server.url, settings) as fetcher:
        with pytest.raises(NetworkError):
            list(fetcher.fetch_many(["missing"], 1 << 20, _read))
        time.sleep(0.5)
        got = [body for _, body in fetcher.fetch_many(["o1"], 1 << 20, _read)]
    assert got == [(server.root / "o1").read_bytes()], got


# ----- halting --------------------------------------------------------------------------
class _NeverAccepts:
    """A listener whose backlog is full and which never accepts: a connect to it
    hangs (the kernel drops the SYN) until the client's timeout."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind((HOST, 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fillers: list[socket.socket] = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect((HOST, self.port))
            self.fillers.append(filler)
        time.sleep(0.2)

    def hangs(self) -> bool:
        probe = socket.socket()
        probe.settimeout(1)
        try:
            probe.connect((HOST, self.port))
            return False
        except TimeoutError:
            return True
        finally:
            probe.close()

    def close(self) -> None:
        for sock in [*self.fillers, self.listener]:
            sock.close()


def _interrupted(
    setup: Setup,  # noqa: F811
    remote: str,
    after: float,
    env: dict[str, str],
    ready: Callable[[], object] | None = None,
) -> tuple[str, float]:
    """A pull of ``remote`` Ctrl-C'd ``after`` seconds after it started, or after
    ``ready()`` came true (a loaded machine starts a pull in seconds); its stderr and
    how long it took to end after the Ctrl-C."""
    argv = sapwood_argv("pull", remote, "main", repo=setup.local)
    process = subprocess.Popen(
        argv, stderr=subprocess.PIPE, text=True, env=dict(os.environ) | env, cwd=ROOT
    )
    if ready is not None:
        assert wait_for(lambda: ready() or process.poll() is not None, 60), "never ready"
    time.sleep(after)
    assert process.poll() is None, "ended before the Ctrl-C"
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    took = time.monotonic() - sent
    assert process.returncode != 0, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err, took


def test_a_ctrl_c_during_a_connect_that_never_completes(
    setup: Setup,  # noqa: F811  (the fixture)
) -> None:
    """The server's backlog is full: the pull's first connect hangs (30 s timeout);
    a Ctrl-C ends the pull at once, no ref moved, and the next pull succeeds."""
    from tests.net.repos import add_remote

    stuck = _NeverAccepts()
    try:
        if not stuck.hangs():
            pytest.skip("the kernel accepted past the backlog here")
        add_remote(setup.local, f"http://{HOST}:{stuck.port}/", "stuck")
        before = refs(setup.local)
        _, took = _interrupted(setup, "stuck", 1.5, {"SAPWOOD_HTTP_TIMEOUT": "30"})
        assert took < 3, f"ended {took:.1f} s after the Ctrl-C"
        assert refs(setup.local) == before
        fsck_clean(setup.local)
    finally:
        stuck.close()
    pulled(setup, setup.serve(plain))


@pytest.mark.parametrize("way", ["lane", pytest.param("per-object", marks=long)])
def test_a_ctrl_c_during_a_stalled_window_with_one_connection(
    setup: Setup,  # noqa: F811  (the fixture)
    way: str,
) -> None:
    """Every content object's answer stalls mid-body (30 s timeout), one connection,
    on the lane or (chunked answers turn the lane off) the per-object path: the
    Ctrl-C ends the pull at once; the next pull from the same server succeeds."""

    def answer(server: RawServer, path: str, seen: int, nth: int) -> Answer:
        if way == "per-object" and not path.endswith(".filez"):
            return _chunked(server, path, seen, nth)
        if path.endswith(".filez"):
            whole = server.plain(path) if way == "lane" else _chunked(server, path, seen, nth)[0]
            return whole[: len(whole) - 12], "stall"
        return server.plain(path), ""

    server = setup.serve(answer)
    before = refs(setup.local)
    env = {"SAPWOOD_HTTP_TIMEOUT": "30", "SAPWOOD_HTTP_CONNECTIONS": "1"}
    _, took = _interrupted(setup, server.remote, 2.0, env)
    assert took < 3, f"ended {took:.1f} s after the Ctrl-C"
    assert refs(setup.local) == before
    fsck_clean(setup.local)
    server.answer = plain
    pulled(setup, server, env={"SAPWOOD_HTTP_CONNECTIONS": "1"})


# ----- many objects, few connections, small batches ---------------------------------------
@pytest.fixture
def wide(tmp_path: Path) -> Iterator[Setup]:
    """An archive of 40 directories of 15 files (metadata spread over the pool, content
    in ten groups of 64): the budget shared by every pool and the batches."""
    from tests.helpers import write_tree
    from tests.net.repos import archive_of

    archive = tmp_path / "archive"
    files = {
        f"d{d:02}/s{d}/f{f:02}": f"file {d}/{f}\n" * (f + 1) for d in range(40) for f in range(15)
    }
    commit = archive_of(archive, write_tree(tmp_path / "src", files))
    yield from serving(archive, commit, tmp_path)


@pytest.mark.parametrize("connections", [pytest.param(1, marks=long), pytest.param(2, marks=long)])
def test_a_wide_pull_with_small_batches_and_failures_never_deadlocks(
    wide: Setup, connections: int
) -> None:
    """Metadata pool, content batches of 50 and the main thread share one or two
    slots while every 4th object's first ask fails (a 500) or is reset."""

    def answer(server: RawServer, path: str, seen: int, nth: int) -> Answer:
        if _some(path, seen) or (path.endswith(".dirtree") and seen == 1 and nth == 3):
            return (response(b"", "500 Oops"), "") if nth % 2 else (b"", "close")
        return server.plain(path), ""

    server = wide.serve(answer)
    env = FAST | {"SAPWOOD_HTTP_CONNECTIONS": str(connections), "SAPWOOD_PULL_BATCH": "50"}
    took = pulled(wide, server, env=env)
    assert 0 < server.most_open <= connections, (server.most_open, server.connections)
    assert took < 30, f"pulled in {took:.1f} s"


@pytest.mark.parametrize("connections", [1, 2])
def test_a_delta_pull_with_one_connection_and_a_reset_part(
    setup: Setup,  # noqa: F811  (the fixture)
    connections: int,
) -> None:
    """The delta's parts now go through the lane: a part's first ask reset mid-body,
    with the budget at 1 or 2; the pull succeeds, connections bounded."""
    from tests.net.repos import sapwood_ok

    sapwood_ok(setup.archive, "static-delta", "generate", "--to", setup.commit)
    from tests.net.repos import publish

    publish(setup.archive)
    parts: list[str] = []

    def answer(server: RawServer, path: str, seen: int, nth: int) -> Answer:
        if "/deltas/" in path and seen == 1 and not path.endswith("superblock"):
            parts.append(path)
            whole = server.plain(path)
            return whole[: len(whole) // 2], "close"
        return server.plain(path), ""

    server = setup.serve(answer)
    pulled(setup, server, env=FAST | {"SAPWOOD_HTTP_CONNECTIONS": str(connections)})
    assert parts, sorted(server.asked)
    assert 0 < server.most_open <= connections, (server.most_open, server.connections)


# ----- Ctrl-C at many points ---------------------------------------------------------------
# fractions of the time a whole pull takes here (measured first: a fixed 0.6 s came after
# the end of a pull once start-up got faster, and no Ctrl-C landed)
FRACTIONS = tuple(0.3 + 0.05 * step for step in range(14)) if LONG else (0.45, 0.75)


def test_a_ctrl_c_at_many_points_of_a_pull_leaves_it_clean(wide: Setup, tmp_path: Path) -> None:
    """SIGINT at several delays into a first pull, each into a fresh repository
    (start-up, walk, content, the commit): each ends in time, with one line or
    succeeded, fsck clean, the ref unmoved or at the commit; a next pull succeeds."""
    from tests.net.repos import add_remote, local_repo

    server = wide.serve(plain)
    env = dict(os.environ) | {"SAPWOOD_HTTP_CONNECTIONS": "2", "SAPWOOD_PULL_BATCH": "50"}
    whole = local_repo(tmp_path / "whole")
    add_remote(whole, server.url, "o")
    started = time.monotonic()
    subprocess.run(sapwood_argv("pull", "o", "main", repo=whole), env=env, cwd=ROOT, check=True)
    took_whole = time.monotonic() - started
    outcomes: list[tuple[float, int, float]] = []
    for number, fraction in enumerate(_fractions(outcomes)):
        delay = fraction * took_whole
        local = local_repo(tmp_path / f"l{number}")
        add_remote(local, server.url, "o")
        argv = sapwood_argv("pull", "o", "main", repo=local)
        process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        time.sleep(delay)
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        took = time.monotonic() - sent
        outcomes.append((round(delay, 2), process.returncode, round(took, 2)))
        assert "Traceback" not in err, (delay, err)
        assert took < 5, (delay, took)
        lines = err.splitlines()
        if process.returncode != 0:  # one line, "interrupted after the commit point:
            assert len(lines) == 1, (delay, err)  # ..." if a batch was kept (attack17 6)
        assert refs(local).get("o:main") in (None, wide.commit), delay
        fsck_clean(local)
        result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
        assert result.returncode == 0, (delay, result.stderr)
        assert refs(local)["o:main"] == wide.commit
        fsck_clean(local)
    print(outcomes)
    assert any(code != 0 for _, code, _ in outcomes), outcomes


def _fractions(outcomes: list[tuple[float, int, float]]) -> Iterator[float]:
    """FRACTIONS, then shorter ones while no Ctrl-C has landed before the pull's end
    (the whole pull, timed under a moment's load, may take longer than the next ones:
    under a load of 12-38 both pulls ended before their signal)."""
    yield from FRACTIONS
    for fraction in (0.2, 0.1, 0.05):
        if any(code != 0 for _, code, _ in outcomes):
            return
        yield fraction


# ----- the benchmarks' work filesystem (benchmarks/workfs.py) ----------------------------
BENCHMARKS = ROOT / "benchmarks"
WORKFS_SCRIPT = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, {benchmarks!r})
import workfs
with workfs.work_filesystem(Path({parent!r}), workfs.Footprint(8 << 20, 1000), "loop") as fs:
    (fs.path / "file").write_text("x")
    print(os.path.realpath(fs.path), flush=True)
    time.sleep(float({sleep!r}))
"""
needs_loop = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/sbin/losetup").exists(), reason="needs root and losetup"
)


def _loops_of(directory: Path) -> list[str]:
    """Loop devices whose backing file lies below ``directory`` (resolved)."""
    listed = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False)
    real = str(directory.resolve())
    return [line.split(":")[0] for line in listed.stdout.splitlines() if real in line]


def _mounted_below(directory: Path) -> list[str]:
    real = str(directory.resolve())
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target.startswith(real + "/"):
            found.append(target)
    return found


def _clean_up(directory: Path) -> None:
    """What a run left: unmounted, detached (the test's own leftovers only)."""
    for target in sorted(_mounted_below(directory), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", target], capture_output=True, check=False)
    for device in _loops_of(directory):
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


@pytest.fixture
def work_parent(tmp_path: Path) -> Iterator[Path]:
    parent = tmp_path / "work"
    parent.mkdir()
    (parent / "users-file").write_text("keep me\n")
    yield parent
    _clean_up(tmp_path)


def _run_workfs(parent: Path | str, sleep: float, cwd: Path | None = None) -> subprocess.Popen[str]:
    script = WORKFS_SCRIPT.format(benchmarks=str(BENCHMARKS), parent=str(parent), sleep=sleep)
    return subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler),
    )


@needs_loop
def test_workfs_sigkilled_leaves_its_filesystem_and_the_next_run_copes(work_parent: Path) -> None:
    """A SIGKILL cannot be cleaned up after by the run itself; the next run must still
    work (a new image beside the old) and nothing of the user's is touched."""
    first = _run_workfs(work_parent, 60)
    assert first.stdout is not None
    first.stdout.readline()
    first.kill()
    first.wait(timeout=10)
    left = _mounted_below(work_parent)
    second = _run_workfs(work_parent, 0)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert (work_parent / "users-file").read_text() == "keep me\n"
    assert _mounted_below(work_parent) == left  # the second one cleaned its own


@needs_loop
def test_workfs_sigkilled_leftover_is_cleaned_or_named_by_the_next_run(work_parent: Path) -> None:
    """attack17 1, fixed by naming: a run killed by SIGKILL (the OOM killer, a CI
    timeout) leaves a mounted ext4, a loop device and its image (up to the image's size
    on a nearly full disk); the next run said nothing of it, and now names it."""
    first = _run_workfs(work_parent, 60)
    assert first.stdout is not None
    first.stdout.readline()
    first.kill()
    first.wait(timeout=10)
    second = _run_workfs(work_parent, 0)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    left = _mounted_below(work_parent)  # still mounted, and not named by the next run
    assert all(Path(target).parent.name in err for target in left), (left, err)


@needs_loop
@pytest.mark.parametrize("how", ["symlink", "relative"])
def test_workfs_given_by_a_symlink_or_relative_path_unmounts_at_the_end(
    work_parent: Path, how: str
) -> None:
    """attack17 2, fixed: --work through a symlink or as a relative path: mounts_under compared the
    unresolved mount point with /proc/self/mounts' resolved one, finds nothing, and
    a run that ends normally leaves its ext4 mounted and its loop device attached
    (then rmtree(ignore_errors) empties the still-mounted filesystem)."""
    if how == "symlink":
        link = work_parent.parent / "link"
        link.symlink_to(work_parent)
        run = _run_workfs(link, 0)
    else:
        run = _run_workfs("work", 0, cwd=work_parent.parent)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert (work_parent / "users-file").read_text() == "keep me\n"
    assert _mounted_below(work_parent) == [], err
    assert _loops_of(work_parent) == [], err


@needs_loop
def test_workfs_interrupted_leaves_nothing_and_no_user_file_gone(work_parent: Path) -> None:
    run = _run_workfs(work_parent, 60)
    assert run.stdout is not None
    run.stdout.readline()
    run.send_signal(signal.SIGINT)
    run.communicate(timeout=60)
    assert _mounted_below(work_parent) == []
    assert _loops_of(work_parent) == []
    assert sorted(p.name for p in work_parent.iterdir()) == ["users-file"]


@needs_loop
def test_workfs_with_too_little_space_says_so_in_one_line(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(small)], check=True)
    try:
        run = _run_workfs(small, 0)
        _, err = run.communicate(timeout=60)
    finally:
        subprocess.run(["umount", str(small)], check=False)
    assert run.returncode != 0
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "free" in err, err


# ----- redirects to a mirror: the urllib3 pool's connections -------------------------------
def _counted_together(*servers: RawServer) -> None:
    """Each server's ``most_open`` counts the connections open to any of ``servers`` at
    once (one set of live connections, one lock). Counted at each accept as the kernel
    sees them (tests/net/servers.py), not by sampling /proc/net/tcp: a read of it is not
    a snapshot, and a connection closed just before the next one opened could be listed
    beside it (two "open" for one, seen once the slot replaced its connection at each
    hop)."""
    first = servers[0]
    for server in servers[1:]:
        server.lock = first.lock
        server._live = first._live


def _to_mirror(mirror: RawServer) -> Callable[[RawServer, str, int, int], Answer]:
    def answer(server: RawServer, path: str, seen: int, nth: int) -> Answer:
        if path.endswith(".filez"):
            where = f"http://{HOST}:{mirror.port}{path}"
            return response(b"", "302 Found", f"Location: {where}\r\n"), ""
        return server.plain(path), ""

    return answer


@pytest.fixture
def mirror(setup: Setup) -> Iterator[Callable[[Callable[..., Answer]], RawServer]]:  # noqa: F811
    servers: list[RawServer] = []

    def serve(answer: Callable[[RawServer, str, int, int], Answer]) -> RawServer:
        servers.append(RawServer(setup.archive, answer).start())
        return servers[-1]

    yield serve
    for server in servers:
        server.stop()


def test_objects_redirected_to_a_mirror_stay_within_the_connections_setting(
    setup: Setup,  # noqa: F811  (the fixture)
    mirror: Callable[[Callable[..., Answer]], RawServer],
) -> None:
    """The origin redirects every content object to a mirror (a CDN's usual setup).
    The redirected GETs went through urllib3's pool, outside the budget, beside the
    slot's kept connection to the origin: 3 open for SAPWOOD_HTTP_CONNECTIONS=1
    (attack17 3). Now each hop uses the slot's connection, replaced by one to the
    mirror (and back)."""
    cdn = mirror(plain)
    origin = setup.serve(_to_mirror(cdn))
    _counted_together(origin, cdn)
    pulled(setup, origin, env=FAST | {"SAPWOOD_HTTP_CONNECTIONS": "1"})
    most = max(origin.most_open, cdn.most_open)
    assert cdn.asked, "nothing was redirected"
    assert most <= 1, f"{most} connections open at once for 1"


def test_a_ctrl_c_while_a_redirected_object_stalls_ends_the_pull_at_once(
    setup: Setup,  # noqa: F811  (the fixture)
    mirror: Callable[[Callable[..., Answer]], RawServer],
) -> None:
    """The mirror stalls mid-body (a 20 s timeout here, 30 s by default). The read was
    on urllib3's pool's connection, which the budget never watched, so the Ctrl-C
    waited out the read timeout (27.9 s after it with the default: attack17 4); now
    it is on the slot's connection, which the halt shuts down."""

    def stall(server: RawServer, path: str, seen: int, nth: int) -> Answer:
        whole = server.plain(path)
        return whole[: len(whole) - 5], "stall"

    cdn = mirror(stall)
    origin = setup.serve(_to_mirror(cdn))
    before = refs(setup.local)
    env = {"SAPWOOD_HTTP_TIMEOUT": "20", "SAPWOOD_HTTP_CONNECTIONS": "1"}
    # in the stall: the mirror was asked, and answered all but the last 5 bytes at once
    _, took = _interrupted(setup, origin.remote, 0.5, env, ready=lambda: cdn.asked)
    assert cdn.asked, "nothing was redirected"
    # the read timeout would end it ~20 s after; 8 s, not 2, beside the suite's other
    # workers (review18 R18-5)
    assert took < 8, f"ended {took:.1f} s after the Ctrl-C"
    assert refs(setup.local) == before
    fsck_clean(setup.local)


# ----- a TLS handshake that never ends ----------------------------------------------------
class _SilentAcceptor:
    """Accepts every connection and never says a byte (a TLS handshake waits)."""

    def __init__(self) -> None:
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(sock)

    def close(self) -> None:
        self.listener.close()
        for sock in self.held:
            sock.close()


def test_a_ctrl_c_during_a_tls_handshake_that_never_ends(
    setup: Setup,  # noqa: F811  (the fixture)
) -> None:
    """https:// to a server that accepts and says nothing: the handshake would wait
    the 30 s timeout; a Ctrl-C ends the pull at once, one line, nothing moved."""
    from tests.net.repos import add_remote

    silent = _SilentAcceptor()
    try:
        add_remote(setup.local, f"https://{HOST}:{silent.port}/", "silent")
        before = refs(setup.local)
        _, took = _interrupted(setup, "silent", 1.5, {"SAPWOOD_HTTP_TIMEOUT": "30"})
        assert silent.held, "never connected"
        assert took < 3, f"ended {took:.1f} s after the Ctrl-C"
        assert refs(setup.local) == before
        fsck_clean(setup.local)
    finally:
        silent.close()


# ----- a connect that hangs in the middle of a pull ---------------------------------------
class _AcceptsOnce(RawServer):
    """Accepts its first connection only; then its backlog is filled and a connect to
    it hangs (the kernel drops the SYN) until the client's timeout."""

    def start(self) -> _AcceptsOnce:
        self._live = set()
        self.listener = socket.socket()
        self.listener.bind((HOST, 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fillers: list[socket.socket] = []
        threading.Thread(target=self._accept_once, daemon=True).start()
        return self

    def _accept_once(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        with self.lock:
            self.connections += 1
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect((HOST, self.port))
            self.fillers.append(filler)
        self._serve_then_forget(sock)

    def stop(self) -> None:
        super().stop()
        for filler in self.fillers:
            filler.close()


@pytest.mark.parametrize("way", ["lane", pytest.param("per-object", marks=long)])
def test_a_ctrl_c_during_a_reconnect_that_hangs(
    setup: Setup,  # noqa: F811  (the fixture)
    way: str,
) -> None:
    """The server closes its one connection after a few answers and accepts no other
    (a reconnect waits the 30 s timeout): a Ctrl-C ends the pull at once."""

    def answer(server: RawServer, path: str, seen: int, nth: int) -> Answer:
        data = server.plain(path) if way == "lane" else _chunked(server, path, seen, nth)[0]
        return data, "close" if nth == 3 else ""

    server = _AcceptsOnce(setup.archive, answer, remote="once").start()
    try:
        from tests.net.repos import add_remote

        add_remote(setup.local, server.url, "once")
        before = refs(setup.local)
        env = {"SAPWOOD_HTTP_TIMEOUT": "30", "SAPWOOD_HTTP_CONNECTIONS": "1"}
        _, took = _interrupted(setup, "once", 2.0, env)
        assert server.connections == 1
        assert took < 3, f"ended {took:.1f} s after the Ctrl-C"
        assert refs(setup.local) == before
        fsck_clean(setup.local)
    finally:
        server.stop()


@needs_loop
@pytest.mark.parametrize("tool", ["losetup", "mount"])
def test_workfs_ctrl_c_as_it_attaches_or_mounts_leaves_nothing(
    work_parent: Path, tool: str
) -> None:
    """attack17 5, fixed: a Ctrl-C that lands while losetup (or mount) runs: the tool
    has attached the
    image (mounted the ext4) but the clean-up callback is registered only after it
    returns, so the loop device stays attached to the image rmtree then deletes (and
    for mount, the ext4 stays mounted). Made deterministic by a wrapper on PATH that
    runs the real tool, says so, then waits (found by SIGINT at 2 ms steps: 3 of 15
    starts around 50 ms left /dev/loopN on 'image (deleted)')."""
    wrappers = work_parent.parent / "bin"
    wrappers.mkdir()
    marker = work_parent.parent / "ran"
    real = f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else f"/usr/bin/{tool}"
    wrapper = wrappers / tool
    wrapper.write_text(f'#!/bin/sh\n{real} "$@"\nrc=$?\ntouch {marker}\nsleep 2\nexit $rc\n')
    wrapper.chmod(0o755)
    script = WORKFS_SCRIPT.format(benchmarks=str(BENCHMARKS), parent=str(work_parent), sleep=5)
    env = dict(os.environ) | {"PATH": f"{wrappers}:{os.environ.get('PATH', '')}"}
    run = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler),
    )
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists(), run.communicate(timeout=30)
    run.send_signal(signal.SIGINT)
    run.communicate(timeout=30)
    assert _mounted_below(work_parent) == []
    assert _loops_of(work_parent) == []


# ----- the update pull's small levels on the walking thread -------------------------------
@pytest.fixture
def update(tmp_path: Path) -> Iterator[tuple[Setup, str]]:
    """An archive at v2 (one file changed deep down) and a local repository at v1: an
    update pull's levels hold one or two dirtrees, walked by the walking thread."""
    from tests.helpers import write_tree
    from tests.net.repos import add_remote, archive_of, local_repo, pull

    archive = tmp_path / "archive"
    files: dict[str, str | bytes] = {
        f"a/b{d}/c/d/f{f}": f"v1 {d} {f}\n" for d in range(3) for f in range(3)
    }
    v1 = archive_of(archive, write_tree(tmp_path / "v1", files))
    local = local_repo(tmp_path / "local")
    servers: list[RawServer] = []

    def serve(answer: Callable[[RawServer, str, int, int], Answer]) -> RawServer:
        server = RawServer(archive, answer, remote=f"r{len(servers) + 1}").start()
        servers.append(server)
        add_remote(local, server.url, server.remote)
        return server

    first = serve(plain)
    assert pull(local, first.remote, "main").returncode == 0
    files["a/b1/c/d/f1"] = "v2\n"
    v2 = archive_of(archive, write_tree(tmp_path / "v2", files))
    yield Setup(archive, v2, local, serve), v1
    for server in servers:
        server.stop()


def test_an_update_pull_whose_dirtrees_are_reset_once_succeeds_with_one_connection(
    update: tuple[Setup, str],
) -> None:
    served, _ = update

    def answer(server: RawServer, path: str, seen: int, nth: int) -> Answer:
        if path.endswith(".dirtree") and seen == 1:
            return b"", "close"
        return server.plain(path), ""

    server = served.serve(answer)
    pulled(served, server, env=FAST | {"SAPWOOD_HTTP_CONNECTIONS": "1"})
    assert 0 < server.most_open <= 1, server.most_open


@pytest.mark.parametrize("bad", ["404", pytest.param("stall", marks=long)])
def test_an_update_pull_with_a_bad_deep_dirtree_fails_in_time_ref_unmoved(
    update: tuple[Setup, str], bad: str
) -> None:
    """The changed path's dirtrees 404 (or stall, every time): one line, in time, no
    ref moved, fsck clean; then a good pull."""
    served, _ = update

    def answer(server: RawServer, path: str, seen: int, nth: int) -> Answer:
        if path.endswith(".dirtree"):  # only the changed ones are asked
            if bad == "404":
                return response(b"no\n", "404 Not Found"), ""
            whole = server.plain(path)
            return whole[: len(whole) // 2], "stall"
        return server.plain(path), ""

    server = served.serve(answer)
    before = refs(served.local)
    refused(served, server, env=FAST | {"SAPWOOD_HTTP_CONNECTIONS": "1"})
    assert refs(served.local) == before
    server.answer = plain
    pulled(served, server, env={"SAPWOOD_HTTP_CONNECTIONS": "1"})
