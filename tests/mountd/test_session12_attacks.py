"""Hostile tester X9 (attack22.md) against session 12's mount change: a verification no
living reader waits for is given up (mountd/waiters.py, mountd/preparing.py; pyfuse3
patch sapwood.3 gives read() the request's pid). A live legitimate reader must never
get an error or a short read because another reader of the same file (or a thread of
its own) died, was stopped, or exited; a given-up verification read again serves the
right bytes; killed readers in a loop leave the daemon bounded and its unmount clean.
Real FUSE mounts of archive repositories (tests/mountd/legacy.py's zeros_claiming): a
hostile object (64 GiB of zeros claimed: minutes) and a legitimate sparse file of
zeros that takes seconds to verify."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import Mounts, read_through
from tests.mountd.legacy import zeros_claiming

MIB = 1 << 20
BIG = 4 << 30  # legitimate sparse zeros: seconds to verify (2 GiB: 3.3 s at load 17, <1 s quiet)
# The tests of BIG take 12-24 s each (its commit hashes 4 GiB in the test's process).
_LONG = pytest.mark.long


def _repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return zeros_claiming(
        tmp_path, monkeypatch, 64 << 30, files={"small": b"small\n"}, sparse={"big": BIG}
    )


def _python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout
    )


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# A process forks; the child reads the first MiB (its request, its pid, waits for the
# verification), the parent reads the same MiB 0.2 s later (waiting on the child's
# locked pages or its own request); the child is SIGKILLed at ARGV[2] s.
_FORKED = """
import os, signal, sys, threading, time
fd = os.open(sys.argv[1], os.O_RDONLY)
child = os.fork()
if child == 0:
    os.pread(fd, 1 << 20, 0)
    os._exit(0)
killer = threading.Timer(float(sys.argv[2]), os.kill, (child, signal.SIGKILL))
killer.daemon = True
killer.start()
time.sleep(0.2)
got = os.pread(fd, 1 << 20, 0)
print(len(got), got.count(0), os.waitpid(child, 0)[1])
"""


@_LONG
def test_a_parent_reading_beside_its_killed_forked_child_gets_every_byte(
    tmp_path: Path, mount: Mounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's request is answered EINTR once it is killed (the verification maybe
    given up, started again for the parent): the parent's read is all its MiB, right."""
    daemon = mount.foreground(_repo(tmp_path, monkeypatch), "main")
    done = _python(_FORKED, str(daemon.mountpoint / "big"), "0.6")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(MIB), str(MIB), str(signal.SIGKILL)], done.stdout


# A thread asks for read-ahead of the first 8 MiB (posix_fadvise WILLNEED: requests in
# its name, sent in the background) and exits; the main thread then reads them.
_THREAD_EXITED = """
import os, sys, threading
fd = os.open(sys.argv[1], os.O_RDONLY)
def ahead():
    os.posix_fadvise(fd, 0, 8 << 20, os.POSIX_FADV_WILLNEED)
thread = threading.Thread(target=ahead)
thread.start()
thread.join()
got = os.pread(fd, 8 << 20, 0)
print(len(got), got.count(0))
"""


@_LONG
def test_a_thread_that_asked_for_read_ahead_and_exited_leaves_its_process_every_byte(
    tmp_path: Path, mount: Mounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background requests name a thread gone (no such process): answered EINTR,
    the pages not filled; the live thread's read waits on them, then asks again in its
    own name: all 8 MiB, right."""
    daemon = mount.foreground(_repo(tmp_path, monkeypatch), "main")
    done = _python(_THREAD_EXITED, str(daemon.mountpoint / "big"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(8 * MIB)] * 2, done.stdout


# Linux AIO (io_submit) of an O_DIRECT read of the first MiB, submitted by a thread that
# then exits; the main thread collects the event: res, and how many zeros it read.
_AIO = """
import ctypes, mmap, os, sys, threading
from ctypes import c_int16, c_int32, c_int64, c_uint16, c_uint32, c_uint64
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
class Iocb(ctypes.Structure):
    _fields_ = [("data", c_uint64), ("key", c_uint32), ("rw_flags", c_int32),
                ("opcode", c_uint16), ("reqprio", c_int16), ("fildes", c_uint32),
                ("buf", c_uint64), ("nbytes", c_uint64), ("offset", c_int64),
                ("reserved2", c_uint64), ("flags", c_uint32), ("resfd", c_uint32)]
class Event(ctypes.Structure):
    _fields_ = [("data", c_uint64), ("obj", c_uint64), ("res", c_int64), ("res2", c_int64)]
ctx = ctypes.c_ulong(0)
assert libc.syscall(206, 8, ctypes.byref(ctx)) == 0, ctypes.get_errno()
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 1 << 20)
cb = Iocb(opcode=0, fildes=fd, buf=ctypes.addressof(ctypes.c_char.from_buffer(buf)),
          nbytes=1 << 20, offset=0)
cbs = (ctypes.POINTER(Iocb) * 1)(ctypes.pointer(cb))
submitted = []
def submit():
    submitted.append(libc.syscall(209, ctypes.c_ulong(ctx.value), ctypes.c_long(1), cbs))
def collect():
    event = Event()
    got = libc.syscall(208, ctypes.c_ulong(ctx.value), ctypes.c_long(1), ctypes.c_long(1),
                       ctypes.byref(event), None)
    print(submitted[0], got, event.res, buf[:].count(0), flush=True)
if sys.argv[2] == "main":  # the main thread submits and collects
    submit()
    collect()
elif sys.argv[2] == "thread":  # a thread submits and ends; the main thread collects
    thread = threading.Thread(target=submit)
    thread.start()
    thread.join()
    collect()
else:  # the main thread submits, a thread collects, the main thread ends (pthread_exit)
    submit()
    threading.Thread(target=collect).start()
    libc.pthread_exit(None)
"""


@_LONG
@pytest.mark.parametrize("submitter", ["main", "thread", "leader"])
def test_an_aio_direct_read_submitted_by_a_thread_that_exited_is_served_to_its_process(
    tmp_path: Path, mount: Mounts, monkeypatch: pytest.MonkeyPatch, submitter: str
) -> None:
    """io_submit of an O_DIRECT read of a file that takes seconds to verify, from a
    worker thread that ends at once (a thread pool's submitter), or from the main
    thread that then ends (pthread_exit: a zombie leader, its other threads alive): the
    kernel sends the request in that thread's name (async DIO), and the process (alive)
    collects the event in another thread. It must get its MiB, not an error (``main``:
    the main thread submits and collects, the control). attack22 1: it got EINTR, the
    request's thread taken for the reader; now its process is (mountd/waiters.py)."""
    daemon = mount.foreground(_repo(tmp_path, monkeypatch), "main")
    done = _python(_AIO, str(daemon.mountpoint / "big"), submitter)
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    assert done.stdout.split() == ["1", "1", str(MIB), str(MIB)], done.stdout


_READ = """
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
at = int(sys.argv[2])
got = os.pread(fd, 1 << 20, at)
print(len(got), got.count(0), flush=True)
"""


def _reader(path: Path, at: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _READ, str(path), str(at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@_LONG
def test_a_sigstopped_reader_neither_fails_nor_holds_up_a_live_one_and_reads_once_continued(
    tmp_path: Path, mount: Mounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader SIGSTOPped while its first read waits for the verification (state T: not
    gone, its request goes on); a second reader of the same MiB gets it all, right,
    while the first stays stopped; SIGCONT: the first gets it all too."""
    daemon = mount.foreground(_repo(tmp_path, monkeypatch), "main")
    big = daemon.mountpoint / "big"
    stopped = _reader(big)
    try:
        time.sleep(0.5)
        os.kill(stopped.pid, signal.SIGSTOP)
        live = _reader(big)
        out, err = live.communicate(timeout=60)
        assert live.returncode == 0 and out.split() == [str(MIB)] * 2, (out, err)
        assert stopped.poll() is None, "the stopped reader ended"
        os.kill(stopped.pid, signal.SIGCONT)
        out, err = stopped.communicate(timeout=60)
        assert stopped.returncode == 0 and out.split() == [str(MIB)] * 2, (out, err)
    finally:
        if stopped.poll() is None:
            os.kill(stopped.pid, signal.SIGCONT)
            stopped.kill()
            stopped.wait()


@_LONG
def test_a_verification_given_up_with_its_killed_reader_serves_the_right_bytes_read_again(
    tmp_path: Path, mount: Mounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The only reader of the legitimate 4 GiB file killed 0.6 s into its verification
    (given up), three times over; then read at its start and its last MiB: every byte,
    zeros; a small file beside it too."""
    daemon = mount.foreground(_repo(tmp_path, monkeypatch), "main")
    big = daemon.mountpoint / "big"
    for _ in range(3):
        killed = _reader(big)
        time.sleep(0.6)
        killed.kill()
        killed.wait(timeout=30)
        assert killed.returncode == -signal.SIGKILL, "read before it was killed: too fast"
    for at in (0, BIG - MIB):
        again = _reader(big, at)
        out, err = again.communicate(timeout=60)
        assert again.returncode == 0 and out.split() == [str(MIB)] * 2, (at, out, err)
    ok, got, _ = read_through(daemon.mountpoint / "small", 10)
    assert ok and got == b"small\n"


@_LONG
def test_killed_hostile_readers_in_a_loop_leave_threads_and_memory_bounded_and_unmount_clean(
    tmp_path: Path, mount: Mounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve rounds of eight readers of the hostile object (64 GiB of zeros claimed) at
    distinct offsets, killed after 0.3 s: each round's verification is given up and the
    next starts it again, its abandoned thread stopping at its next chunk. The daemon's
    threads come back within a few of where they were, its RSS grows by less than
    32 MiB, the small file reads at once, and fusermount -u ends it within 10 s."""
    daemon = mount.foreground(_repo(tmp_path, monkeypatch), "main")
    mnt = daemon.mountpoint
    ok, _, _ = read_through(mnt / "small", 10)
    assert ok
    threads, rss = _threads(daemon.pid), _rss_kib(daemon.pid)
    most = threads
    argv = ["dd", f"if={mnt / 'hostile'}", "of=/dev/null", "bs=128k", "count=1"]
    for round_ in range(12):
        readers = [
            subprocess.Popen(
                [*argv, f"skip={(round_ * 8 + n) * 97}"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for n in range(8)
        ]
        time.sleep(0.3)
        for reader in readers:
            reader.kill()
        for reader in readers:
            reader.wait(timeout=30)
        most = max(most, _threads(daemon.pid))
    time.sleep(2)
    after, grown = _threads(daemon.pid), _rss_kib(daemon.pid) - rss
    print(f"threads {threads} -> at most {most} -> {after}; RSS grown {grown >> 10} MiB")
    ok, got, taken = read_through(mnt / "small", 5)
    assert ok and got == b"small\n", f"small: {ok} in {taken:.2f} s"
    assert after <= threads + 4 and grown < 32 << 10
    started = time.monotonic()
    done = subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    daemon.process.wait(timeout=10)
    assert time.monotonic() - started < 10


_TMPFS = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs as TMPDIR")


@contextmanager
def _swz1_mount(
    tmp_path: Path, mount: Mounts, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, bytes, Callable[[], int]]]:
    """A legitimate 320 MiB SWZ1 object (inflated to a spool in TMPDIR, a 384 MiB tmpfs:
    room for one spool of it, not two), mounted: its path, its content, and the MiB of
    TMPDIR in use."""
    from tests.mountd.test_session11_attacks import _compressible, _free, _swz1_repo, _tmpfs

    with _tmpfs(tmp_path / "tmpfs", 384) as tmpdir:
        monkeypatch.setenv("TMPDIR", str(tmpdir))
        content = _compressible(320 * MIB)
        repo, _ = _swz1_repo(tmp_path, {"big": content})
        full = _free(tmpdir)
        daemon = mount.foreground(repo, "main")
        yield daemon.mountpoint / "big", content, lambda: (full - _free(tmpdir)) >> 20


def _killed_cat(big: Path, sink: Path, after: float = 0.35) -> None:
    """``cat BIG`` killed ``after`` seconds into its first read, before a byte came (the
    spool given up: its thread abandoned, to stop at its next chunk)."""
    with sink.open("wb") as out:
        killed = subprocess.Popen(["cat", str(big)], stdout=out, stderr=subprocess.DEVNULL)
    time.sleep(after)
    killed.kill()
    killed.wait(timeout=30)
    assert sink.stat().st_size == 0, "spooled before its reader was killed: too fast"


@_TMPFS
def test_a_reader_right_after_a_killed_one_of_an_swz1_object_gets_every_byte(
    tmp_path: Path, mount: Mounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The only reader killed 0.35 s into the spooling; another (alive) reads the file
    at once after. attack22 2: its preparation started again while the abandoned
    thread's spool still took its 320 MiB, and it was refused for room (EIO, 'do not
    fit ... set TMPDIR elsewhere'): a live reader's error because another reader died.
    Now it joins the spooling under way, or (come after the give-up) waits for the
    abandoned thread to end first (mountd/preparing.py)."""
    with _swz1_mount(tmp_path, mount, monkeypatch) as (big, content, _):
        _killed_cat(big, tmp_path / "sink")
        ok, got, _ = read_through(big, 60)
        assert ok and got == content
