"""Review 24 (session 18): attack20 3's rewritten test (cc3465d) measured per file.

That test reads the machine's Cached (/proc/meminfo) around the daemon's end: other
sessions dropping page cache in that second fail it, others filling it hide what it
measures, and nothing asserts that the killed readers' requests and folios were there at
all. cachestat(2) (Linux 6.5) counts the hostile file's own pages: the measure here,
with the precondition (the folios were there) asserted (review24 4 in /work/plan/review24.md)."""

from __future__ import annotations

import ctypes
import os
import platform
import signal
from pathlib import Path

import pytest

from tests.helpers import IS_ROOT, Mounts, wait_for
from tests.mountd.legacy import zeros_claiming

_CACHESTAT = 451  # the same number on every architecture (the unified table)


class _Range(ctypes.Structure):
    _fields_ = (("off", ctypes.c_uint64), ("len", ctypes.c_uint64))


class _Stat(ctypes.Structure):
    _fields_ = tuple(
        (name, ctypes.c_uint64)
        for name in ("cache", "dirty", "writeback", "evicted", "recently_evicted")
    )


def _cached_pages(path: Path) -> int:
    """The pages of ``path``'s page cache (cachestat over the whole file)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        result = _Stat()
        whole = _Range(0, 0)
        if libc.syscall(_CACHESTAT, fd, ctypes.byref(whole), ctypes.byref(result), 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), str(path))
        return int(result.cache)
    finally:
        os.close(fd)


def _dontneed(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.mark.long
@pytest.mark.skipif(not IS_ROOT, reason="mounts a fusectl")
@pytest.mark.skipif(
    tuple(int(n) for n in platform.release().split(".")[:2]) < (6, 5), reason="no cachestat"
)
def test_killed_hostile_reads_leave_no_folio_of_the_file_that_cannot_be_let_go(
    tmp_path: Path, mount: Mounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 readers of a hostile object, killed: the file's page cache held their
    read-ahead folios (asserted, per file, not the machine's: the test cannot pass on
    readers that never read),
    the requests all answered, then fadvise(DONTNEED) lets the file's folios go: what
    stays is what a waiting request would still hold locked (attack20 3: ~125 MiB)."""
    from tests.mountd.test_session11_attacks import _killed_readers
    from tests.mountd.test_waiters import _waiting_requests

    page_kib = os.sysconf("SC_PAGE_SIZE") >> 10
    repo = zeros_claiming(tmp_path, monkeypatch, 64 << 30)
    daemon = mount.foreground(repo, "main")
    hostile = daemon.mountpoint / "hostile"
    with _waiting_requests(daemon.mountpoint, tmp_path) as waiting:
        _killed_readers(hostile, 1000, 100)
        out = waiting()
        held = _cached_pages(hostile) * page_kib
        assert wait_for(lambda: waiting() == 0, 10), f"{waiting()} requests still out"
    _dontneed(hostile)
    left = _cached_pages(hostile) * page_kib
    print(f"requests out {out}; the file's cache {held >> 10} MiB, after DONTNEED {left} KiB")
    # the readers' read-ahead folios were there (what they read, at least 32 MiB of the
    # 125): the requests were sent (how many are still out once the readers are reaped
    # depends on how fast the daemon answers: printed, not asserted)
    assert held >= 32 << 10, f"only {held} KiB of the file's folios: nothing to measure"
    assert left < 1 << 10, f"{left} KiB of the file's folios could not be let go of"
    os.kill(daemon.pid, signal.SIGTERM)
    daemon.process.wait(timeout=20)
