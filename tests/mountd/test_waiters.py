"""A verification no one waits for any more is given up (mountd/waiters.py,
mountd/preparing.py; attack20 5 and 1): the readers' pids, as the kernel names them in
each request, looked at while it runs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from mountd.preparing import ALONE, DEADLINE, LEAVING, LONG, WATCH, Preparer
from mountd.sources import Pace, Preparation
from mountd.waiters import Liveness
from store import ObjectId, ObjectReadError, ReaderGoneError
from tests.helpers import Mounts
from tests.mountd.legacy import WaitingView, zeros_claiming


class _Gone(Liveness):
    """A Liveness whose answers the test gives: the pids in ``pids`` are gone."""

    def __init__(self) -> None:  # no super().__init__(): nothing of /proc is looked at
        self.pids: set[int] = set()
        self.asked: list[int] = []

    def reader(self, pid: int) -> int:
        return pid  # each pid its own process

    def gone(self, pid: int) -> bool:
        self.asked.append(pid)
        return pid in self.pids


def test_a_process_is_gone_once_it_has_exited_and_not_before() -> None:
    liveness = Liveness()
    assert liveness.usable
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert not liveness.gone(child.pid)
        assert not liveness.gone(os.getpid())
        assert not liveness.gone(threading.get_native_id())
        child.kill()
        deadline = time.monotonic() + 20
        while not liveness.gone(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        stat = Path(f"/proc/{child.pid}/stat").read_text()
        assert liveness.gone(child.pid), f"a killed child, not reaped (exiting, a zombie): {stat}"
    finally:
        child.kill()
        child.wait()
    assert liveness.gone(child.pid), "reaped: no such process"


# The main thread ends (pthread_exit: a zombie leader) while another thread waits for a
# line on stdin, then ends the process.
_LEADER_ENDS = """
import ctypes, sys, threading
threading.Thread(target=sys.stdin.readline).start()
print("started", flush=True)
ctypes.CDLL(None).pthread_exit(None)
"""


def test_a_process_whose_leader_ended_is_gone_only_once_its_last_thread_is() -> None:
    """A reader's process is what is looked at, not a thread of it (attack22 1): a
    process whose main thread called pthread_exit (its leader a zombie) while another
    thread runs is alive; once that thread ends (the process a zombie), it is gone."""
    liveness = Liveness()
    child = subprocess.Popen(
        [sys.executable, "-c", _LEADER_ENDS], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"started\n"
        stat = Path(f"/proc/{child.pid}/stat")
        deadline = time.monotonic() + 20
        while stat.read_text().split(") ")[1][0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stat.read_text().split(") ")[1][0] == "Z", "the leader did not end"
        assert not liveness.gone(child.pid), "a zombie leader, its other thread alive"
        assert child.stdin is not None
        child.stdin.write(b"end\n")
        child.stdin.flush()
        while not liveness.gone(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert liveness.gone(child.pid), "every thread ended"
    finally:
        child.kill()
        child.wait()


def test_a_request_s_thread_is_taken_for_its_process_as_it_arrives() -> None:
    """The kernel names a request's thread: a thread not its process's leader is taken
    for its process (the one that waits for an asynchronous read it submitted, attack22
    1), a leader for itself; one that has ended already is unknown (0: never gone)."""
    liveness = Liveness()
    tids: list[int] = []
    stop = threading.Event()

    def thread_of_this_process() -> None:
        tids.append(threading.get_native_id())
        stop.wait(30)

    thread = threading.Thread(target=thread_of_this_process)
    thread.start()
    try:
        while not tids:
            time.sleep(0.01)
        assert tids[0] != os.getpid()
        assert liveness.reader(tids[0]) == os.getpid()
    finally:
        stop.set()
        thread.join()
    assert liveness.reader(os.getpid()) == os.getpid()
    done = subprocess.Popen(["true"])
    done.wait()
    assert liveness.reader(done.pid) == 0
    assert liveness.reader(0) == 0


def test_an_unknown_reader_is_never_gone() -> None:
    """pid 0 (the kernel could not name it in the daemon's namespace), or a /proc that is
    not this process's namespace's: taken as alive, whatever /proc says."""
    liveness = Liveness()
    assert not liveness.gone(0)
    child = subprocess.Popen(["true"])
    child.wait()
    liveness.usable = False
    assert not liveness.gone(child.pid)


def test_a_verification_whose_readers_are_all_gone_is_given_up_and_each_answered() -> None:
    """Two requests wait for one hostile object (paced, minutes): the first's reader gone,
    its request is answered (ReaderGoneError) and the verification goes on for the
    second; the second's gone too, it is answered within a few WATCH and the
    verification stops at the look after (not at once: a retry may come, attack22 2),
    within a WATCH and ALONE more."""
    view = WaitingView({1: LONG + 1}, held={1}, paced=True)
    preparer = Preparer(view)  # type: ignore[arg-type]
    gone = _Gone()
    preparer.liveness = gone
    chunks: list[int] = []
    counts: list[int] = []
    ended: dict[str, float] = {}

    async def read(name: str, pid: int) -> None:
        with pytest.raises(ReaderGoneError):
            await preparer.read(1, 0, 4, pid)
        ended[name] = trio.current_time()

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, "first", 101)
            await trio.sleep(0.05)
            nursery.start_soon(read, "second", 102)
            gone.pids.add(101)
            await trio.sleep(3 * WATCH)
            assert list(ended) == ["first"], ended
            chunks.append(view.chunks[1])
            await trio.sleep(WATCH)
            assert view.chunks[1] > chunks[0] and preparer.given_up == 0, "it goes on"
            gone.pids.add(102)
            last_gone = trio.current_time()
        answered = trio.current_time()
        with trio.move_on_after(WATCH + ALONE + 1):  # the look after gives it up
            while preparer.given_up == 0:
                await trio.sleep(0.01)
        given_up = trio.current_time() - answered
        counts.extend([preparer.given_up, preparer.overdue])
        print(f"given up {given_up:.2f} s after its last request was answered")
        return ended["second"] - last_gone

    try:
        taken = trio.run(main)
        time.sleep(0.1)
        stopped = view.chunks[1]
        time.sleep(0.2)
        assert view.chunks[1] == stopped, "it stops"
    finally:
        view.go.set()
    print(f"answered {taken:.2f} s after the last reader went")
    assert taken < 3 * WATCH
    assert counts == [1, 0], "given up once, overdue none"


def test_a_request_whose_reader_is_gone_is_answered_while_the_rest_wait_on() -> None:
    """The second request's reader gone, it is answered at once; the first (alive)
    waits on and is served when the verification ends."""
    view = WaitingView({1: LONG + 1}, held={1}, paced=True)
    preparer = Preparer(view)  # type: ignore[arg-type]
    gone = _Gone()
    gone.pids.add(202)
    preparer.liveness = gone
    ended: dict[str, str] = {}

    async def read(name: str, pid: int) -> None:
        try:
            ended[name] = (await preparer.read(1, 0, 4, pid)).decode()
        except ReaderGoneError:
            ended[name] = "gone"

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, "alive", 201)
            await trio.sleep(0.05)
            nursery.start_soon(read, "killed", 202)
            await trio.sleep(3 * WATCH)
            assert ended == {"killed": "gone"}, ended
            view.go.set()

    trio.run(main)
    assert ended == {"killed": "gone", "alive": "read"} and preparer.given_up == 0


def test_a_live_reader_coming_as_a_verification_is_given_up_starts_it_again() -> None:
    """The only reader gone, its verification given up; a second read (alive) that
    joined it just then is not answered with the first one's fate: it starts again."""
    view = WaitingView({1: LONG + 1}, held={1}, paced=True)
    preparer = Preparer(view)  # type: ignore[arg-type]
    gone = _Gone()
    gone.pids.add(301)
    preparer.liveness = gone
    got: list[bytes] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_gone_or_read, preparer, 1, 301)
            while preparer.given_up == 0:  # the moment it is given up, before it ends
                await trio.sleep(0)
            nursery.start_soon(_read_into, preparer, 1, 302, got)
            await trio.sleep(3 * WATCH)
            assert got == [] and preparer.given_up == 1
            view.go.set()

    trio.run(main)
    assert got == [b"read"]


def test_a_reader_coming_right_after_the_last_request_was_answered_joins_its_verification() -> None:
    """The only reader gone, its request answered; a live reader's request comes the next
    moment (the kernel's retry in the name of a reader that waited on the pages the
    gone one's request held: attack22 2, review17 R17-1). It joins the verification
    under way, which is neither given up nor started again, and is served from it."""
    view = WaitingView({1: LONG + 1}, held={1}, paced=True)
    preparer = Preparer(view)  # type: ignore[arg-type]
    gone = _Gone()
    gone.pids.add(401)
    preparer.liveness = gone
    got: list[bytes] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:

            async def killed() -> None:
                await _gone_or_read(preparer, 1, 401)
                nursery.start_soon(_read_into, preparer, 1, 402, got)  # at once after

            nursery.start_soon(killed)
            await trio.sleep(2 * WATCH + ALONE)
            assert 401 in gone.asked and got == [], "the gone reader was answered"
            before = view.chunks[1]
            await trio.sleep(WATCH)
            assert preparer.given_up == 0 and view.chunks[1] > before, "it goes on"
            view.go.set()

    trio.run(main)
    assert got == [b"read"] and preparer.given_up == 0


class _SlowToLeave:
    """A view stand-in: inode 1, an object whose verification runs (paced, every 10 ms)
    until ``go``, and whose thread, given up, takes ``leaving`` seconds to end (an SWZ1
    spool of hundreds of MiB closed, its room in TMPDIR given back). ``starts`` and
    ``ends``: when its threads started and ended (time.monotonic)."""

    def __init__(self, leaving: float) -> None:
        self.leaving = leaving
        self.go = threading.Event()
        self.ready: set[object] = set()
        self.starts: list[float] = []
        self.ends: list[float] = []

    def preparation(self, ino: int) -> Preparation | None:
        if ino in self.ready:
            return None

        def work(pace: Pace) -> object:
            self.starts.append(time.monotonic())
            try:
                while not self.go.wait(0.01):
                    pace()
                return ino
            except ObjectReadError:  # given up: what it holds takes a while to go
                time.sleep(self.leaving)
                raise
            finally:
                self.ends.append(time.monotonic())

        return Preparation(ObjectId(bytes([ino]) * 32), work, self.ready.add, LONG + 1)

    def read(self, ino: int, offset: int, size: int) -> bytes:
        return b"read"


@pytest.mark.parametrize("leaving", [0.5, LEAVING + 0.5])
def test_a_verification_started_again_waits_for_the_thread_of_the_one_given_up(
    leaving: float,
) -> None:
    """The only reader gone, its verification given up; its thread takes ``leaving`` s
    to end (an abandoned SWZ1 spool holding TMPDIR's room until closed: attack22 2, a
    live reader's new spool was refused for that room). A live reader's read then
    starts the verification again only once that thread has ended (never two threads
    of one object at once), or once LEAVING has passed (a bound), and is served."""
    view = _SlowToLeave(leaving)
    preparer = Preparer(view)  # type: ignore[arg-type]
    gone = _Gone()
    gone.pids.add(501)
    preparer.liveness = gone
    got: list[bytes] = []

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_gone_or_read, preparer, 1, 501)
            with trio.fail_after(10):
                while preparer.given_up == 0:
                    await trio.sleep(0.01)
            asked = time.monotonic()
            nursery.start_soon(_read_into, preparer, 1, 502, got)
            with trio.fail_after(10):
                while len(view.starts) < 2 or len(view.ends) < 1:
                    await trio.sleep(0.01)
            view.go.set()
        return asked

    asked = trio.run(main)
    waited, ended = view.starts[1] - asked, view.ends[0] - asked
    print(f"after the give-up: the first thread ended {ended:.2f} s, the next began {waited:.2f} s")
    assert got == [b"read"] and preparer.given_up == 1
    if leaving < LEAVING:
        assert view.starts[1] >= view.ends[0], "two threads of one object at once"
    else:
        assert waited >= LEAVING - 0.05 and view.starts[1] < view.ends[0], "not bounded"


def test_a_request_that_fails_before_it_waits_leaves_no_waiter_behind() -> None:
    """The daemon's hook before a request waits raises (a loop more started on a closed
    nursery, at the very end of an unmount: review17 R17-15): the request fails with
    it, and the verification it started, no request waiting, is given up at a look
    (its waiter was left in the list, and it ran on for as long as the run)."""
    view = WaitingView({1: LONG + 1}, held={1}, paced=True)

    def closed() -> Callable[[], None]:
        raise RuntimeError("the nursery is closed")

    preparer = Preparer(view, on_wait=closed)  # type: ignore[arg-type]
    preparer.liveness = _Gone()

    async def main() -> None:
        with pytest.raises(RuntimeError, match="closed"):
            await preparer.read(1, 0, 4, 601)
        with trio.fail_after(2 * WATCH + 1):
            while preparer.given_up == 0:
                await trio.sleep(0.01)

    try:
        trio.run(main)
    finally:
        view.go.set()
    assert preparer.given_up == 1


async def _read_into(preparer: Preparer, ino: int, pid: int, got: list[bytes]) -> None:
    got.append(await preparer.read(ino, 0, 4, pid))


def test_readers_gone_while_waiting_for_the_lane_give_it_up_without_a_thread() -> None:
    """Ten hostile objects (chunks that never end: the worst case), the readers of the
    last nine gone while they wait for the lane: they are answered without ever taking
    a thread, and a 300 MiB file's verification gets the lane once the first one's
    deadline passes, not after nine more (attack20 5)."""
    hostile = list(range(1, 11))
    view = WaitingView({**dict.fromkeys(hostile, LONG + 1), 11: 300 << 20}, held=set(hostile))
    preparer = Preparer(view)  # type: ignore[arg-type]
    gone = _Gone()
    gone.pids.update(range(1002, 1011))
    preparer.liveness = gone
    before = threading.active_count()
    counts: list[int] = []

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            for ino in hostile:
                nursery.start_soon(_gone_or_read, preparer, ino, 1000 + ino)
                if ino == hostile[0]:  # the live one takes the lane (trio shuffles starts:
                    await trio.sleep(0.05)  # one of the others half the time, a flake)
            await trio.sleep(3 * WATCH)
            counts.append(threading.active_count() - before)
            assert preparer._leaving == {}, "runs without a thread wait for none to end"
            started = time.monotonic()
            with trio.fail_after(DEADLINE + 2):
                assert await preparer.read(11, 0, 4, 2000) == b"read"
            view.go.set()
            return time.monotonic() - started

    taken = trio.run(main)
    print(f"threads while nine wait, their readers gone: {counts[0]}; 300 MiB in {taken:.2f} s")
    assert counts[0] <= 1 and preparer.given_up == 9


async def _gone_or_read(preparer: Preparer, ino: int, pid: int) -> None:
    with contextlib.suppress(ReaderGoneError):
        await preparer.read(ino, 0, 4, pid)


def test_a_reader_killed_in_a_direct_read_of_a_hostile_object_ends_at_once(
    tmp_path: Path, mount: Mounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A synchronous read (O_DIRECT) of a hostile object (64 GiB of zeros claimed:
    minutes), its reader SIGKILLed: the kernel sends no interrupt pyfuse3 passes, and the
    reader waited, unkillable, for the verification's end. Its request is answered once
    its reader is seen dying (SIGKILL pending): it ends within seconds. A live reader of
    the same object beside it goes on waiting (its read is not answered)."""
    repo = zeros_claiming(tmp_path, monkeypatch, 64 << 30)
    daemon = mount.foreground(repo, "main")
    hostile = daemon.mountpoint / "hostile"
    dd = ["dd", f"if={hostile}", "of=/dev/null", "bs=4k", "count=1"]
    quiet = subprocess.DEVNULL
    live = subprocess.Popen([*dd, "skip=100"], stdout=quiet, stderr=quiet)
    killed = subprocess.Popen([*dd, "skip=7", "iflag=direct"], stdout=quiet, stderr=quiet)
    try:
        time.sleep(1)
        assert killed.poll() is None and live.poll() is None, "the hostile object was read"
        killed.kill()
        started = time.monotonic()
        killed.wait(timeout=30)
        taken = time.monotonic() - started
        print(f"the killed reader ended {taken:.2f} s after SIGKILL")
        assert taken < 3
        time.sleep(2)
        assert live.poll() is None, "a live reader's read was answered"
    finally:
        live.kill()
        killed.kill()


@contextmanager
def _waiting_requests(mnt: Path, work: Path) -> Iterator[Callable[[], int]]:
    """How many requests of the FUSE mount on ``mnt`` the kernel has out (fusectl's
    ``waiting``: sent to the daemon or queued, not answered), read through a fusectl
    mounted in ``work`` for as long as the block lasts (as tests/mountd/test_mount.py)."""
    found = [
        line.split()[2]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4] == str(mnt)
    ]
    assert len(found) == 1, found
    control = work / "fusectl"
    control.mkdir()
    subprocess.run(["mount", "-t", "fusectl", "fusectl", str(control)], check=True)
    try:
        waiting = control / found[0].split(":")[1] / "waiting"
        yield lambda: int(waiting.read_text())
    finally:
        subprocess.run(["umount", str(control)], check=True)
        control.rmdir()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a fusectl")
def test_the_requests_of_a_thousand_killed_readers_are_all_answered_within_seconds(
    tmp_path: Path, mount: Mounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 readers of a hostile object at distinct offsets, killed: their read-ahead
    requests (each holding a background slot and its locked page-cache folios) waited for
    the verification's minutes (attack20 1 and 3). Now none is left out within seconds
    (the kernel's count of the mount's requests waiting), while they were 1,000."""
    from tests.mountd.test_session11_attacks import _killed_readers

    repo = zeros_claiming(tmp_path, monkeypatch, 64 << 30)
    daemon = mount.foreground(repo, "main")
    with _waiting_requests(daemon.mountpoint, tmp_path) as waiting:
        _killed_readers(daemon.mountpoint / "hostile", 1000, 100, wait=2)
        killed = waiting()
        started = time.monotonic()
        while waiting() and time.monotonic() - started < 10:
            time.sleep(0.05)
        left, taken = waiting(), time.monotonic() - started
    print(f"requests out: {killed} once the readers were killed, {left} {taken:.2f} s later")
    assert left == 0 and taken < 5


def test_a_reaped_reader_is_gone_on_a_kernel_without_pidfd_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before Linux 6.9 pidfd_open refuses PIDFD_THREAD whatever the pid: a reader
    already reaped must still read as gone (asked again without the flag), and a live
    one as alive (R17-12: every reaped reader looked alive there)."""
    import subprocess

    from mountd import waiters

    real = os.pidfd_open

    def old_kernel(pid: int, flags: int = 0) -> int:
        if flags:
            raise OSError(22, "Invalid argument")
        return real(pid, flags)

    monkeypatch.setattr(os, "pidfd_open", old_kernel)
    done = subprocess.Popen(["true"])
    done.wait()  # reaped: no such process
    assert waiters._no_such_process(done.pid)
    assert not waiters._no_such_process(os.getpid())
